"""What both clients do with a stream of instance messages: whole verified instances, datasets, files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from pacsvault.client._files import InstanceFiles, Progress, SavedInstance
from pacsvault.client._messages import DatasetInstance, Instance, InstanceAssembler, InstanceMessage, to_dataset
from pacsvault.client._streams import AioMessageStream, MessageStream


def assembled(stream: MessageStream[InstanceMessage]) -> Iterator[Instance]:
    assembler = InstanceAssembler()
    try:
        for message in stream:
            done = assembler.feed(message)
            if done is not None:
                yield done
        last = assembler.finish()
        if last is not None:
            yield last
    finally:
        stream.cancel()


def as_datasets(instances: Iterator[Instance]) -> Iterator[DatasetInstance]:
    for attributes, data in instances:
        yield attributes, to_dataset(data)


def save(stream: MessageStream[InstanceMessage], files: InstanceFiles,
         progress: Progress | None) -> list[SavedInstance]:
    saved: list[SavedInstance] = []
    try:
        for message in stream:
            done = files.feed(message)
            if done is not None:
                saved.append(done)
                if progress is not None:
                    progress(done)
        last = files.finish()
    except BaseException:
        files.abort()
        stream.cancel()
        raise
    if last is not None:
        saved.append(last)
        if progress is not None:
            progress(last)
    return saved


async def aio_assembled(stream: AioMessageStream[InstanceMessage]) -> AsyncIterator[Instance]:
    assembler = InstanceAssembler()
    try:
        async for message in stream:
            done = assembler.feed(message)
            if done is not None:
                yield done
        last = assembler.finish()
        if last is not None:
            yield last
    finally:
        stream.cancel()


async def aio_as_datasets(instances: AsyncIterator[Instance]) -> AsyncIterator[DatasetInstance]:
    async for attributes, data in instances:
        yield attributes, to_dataset(data)


async def aio_save(stream: AioMessageStream[InstanceMessage], files: InstanceFiles,
                progress: Progress | None) -> list[SavedInstance]:
    saved: list[SavedInstance] = []
    try:
        async for message in stream:
            done = await asyncio.to_thread(files.feed, message)
            if done is not None:
                saved.append(done)
                if progress is not None:
                    progress(done)
        last = await asyncio.to_thread(files.finish)
    except BaseException:
        files.abort()
        stream.cancel()
        raise
    if last is not None:
        saved.append(last)
        if progress is not None:
            progress(last)
    return saved
