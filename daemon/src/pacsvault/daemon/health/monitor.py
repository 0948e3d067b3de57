"""The daemon's health monitor: polls, decides placement, publishes events.

Two passes, each a plain method tests call directly with an injected
poller, clock, volume mapper and disk-usage function:

* :meth:`HealthMonitor.poll_disks` runs the hardware poller (SMART, NVMe,
  md) and re-maps every tier volume to the disks and arrays beneath it;
  slow (smartctl may take seconds a disk), every ``health.poll_interval_s``
  or early when udev reports a disk coming or going.
* :meth:`HealthMonitor.check_capacity` measures every volume; cheap, every
  ``health.capacity_interval_s``.

Both end in one locked step that stops or resumes new data on each volume
(see :mod:`.placement`), builds the :class:`HealthSnapshot`, numbers and
publishes the events, and tells the server whether the appliance can take
writes at all (``grpc.health.v1``). Threads only schedule these passes.

Placement is applied through the storage layer's own ``Volume.failed``
field, which ``place`` already honours, with ``fail`` and ``recover``, so
that every process of the daemon learns of it. The monitor remembers the
exact text it set and clears only that, so a real I/O failure recorded by
the storage layer is never overwritten or cleared by a health decision.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from pacsvault.daemon.health.capacity import Usage, above_threshold, capacity_reasons
from pacsvault.daemon.health.describe import describe, from_hardware, is_bad, tiers
from pacsvault.daemon.health.model import ArrayState, DeviceState, Event, EventKind, HealthSnapshot, VolumeState
from pacsvault.daemon.health.placement import Beneath, Judged, decide
from pacsvault.daemon.health.pubsub import Broker, Subscription
from pacsvault.daemon.health.volumes import VolumeMapper
from pacsvault.hardware import BlockDevice, PollResult, Reason, Verdict, worst

log = logging.getLogger(__name__)

SHUTTING_DOWN = "the appliance is shutting down"
BLOCK_PREFIX = "no new data (disk health): "
# After udev reports a change, wait for the burst (disk, partitions, md) to settle.
UDEV_SETTLE_S = 1.0


class Poller(Protocol):
    """The hardware poller's one method (``pacsvault.hardware.HealthPoller``)."""

    def run_once(self) -> PollResult:
        """One pass over every disk and array."""
        ...


class DiskList(Protocol):
    """The disks the poller last judged (``volumes.RecordingDisks``)."""

    last: list[BlockDevice]


class TierVolume(Protocol):
    """What the monitor needs of a storage-layer ``Volume``."""

    tier: str
    volume_id: str
    path: str
    failed: str

    def accepts(self, size: int) -> bool:
        """Whether placement would put ``size`` more bytes here."""
        ...

    def fail(self, reason: str) -> None:
        """Stops new data landing here (every process of the daemon)."""
        ...

    def recover(self, reason: str | None = None) -> None:
        """Takes new data again if ``reason`` is still why it stopped."""
        ...


@dataclass(frozen=True)
class Settings:
    """The ``[health]`` options the monitor itself uses."""

    poll_interval_s: float = 300.0
    capacity_interval_s: float = 10.0
    capacity_warning_percent: float = 80.0
    max_watchers: int = 8
    watch_queue_size: int = 256


@dataclass(frozen=True)
class Update:
    """One message of a watch: a snapshot (first, or after a gap) or an event."""

    snapshot: HealthSnapshot | None = None
    event: Event | None = None
    dropped: int = 0


@dataclass
class _Seen:
    above: bool | None = None
    writable: bool | None = None


def _disk_usage(path: str) -> Usage:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return Usage(error=exc.strerror or str(exc))
    return Usage(usage.total, usage.used, usage.free)


class HealthMonitor:
    """See the module docstring.

    Args:
        poller: The hardware poller.
        disks: Where the poller's disk source keeps the disks it listed.
        mapper: Finds the disks and arrays beneath volume paths.
        volumes: Current tier volumes (called every pass: volumes come and go).
        settings: Intervals, threshold and watcher limits.
        clock: Wall-clock seconds, stamped on events.
        usage: Disk usage of a path.
        on_writable: Told whether any volume takes new data, at the first
            pass and on every change.
        watcher: Optional udev watcher factory: given a wake callback, returns
            an object with ``start() -> bool`` and ``stop()``.
    """

    def __init__(
        self,
        *,
        poller: Poller,
        disks: DiskList,
        mapper: VolumeMapper,
        volumes: Callable[[], Sequence[TierVolume]],
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        usage: Callable[[str], Usage] = _disk_usage,
        on_writable: Callable[[bool], None] | None = None,
        watcher: Callable[[Callable[[str, str], None]], object] | None = None,
    ) -> None:
        self._poller, self._disks, self._mapper, self._volumes = poller, disks, mapper, volumes
        self.settings = settings or Settings()
        self._clock, self._usage, self.on_writable = clock, usage, on_writable
        self._watcher_factory = watcher
        self._watcher: object | None = None
        self._lock = threading.RLock()
        self._broker: Broker[Event] = Broker(self.settings.max_watchers, self.settings.watch_queue_size)
        self._snapshot = HealthSnapshot()
        self._sequence = 0
        self._devices: tuple[DeviceState, ...] = ()
        self._arrays: tuple[ArrayState, ...] = ()
        self._beneath: dict[str, Beneath] = {}
        # One thread at a time in discovery: libudev contexts are not thread-safe.
        self._discovering = threading.Lock()
        self._polled_at: float | None = None
        self._poll_error = ""
        self._seen: dict[str, _Seen] = {}
        self._blocked: dict[str, str] = {}
        self._writable: bool | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.events_total: collections.Counter[EventKind] = collections.Counter()
        self.polls_total = 0
        self.poll_failures_total = 0
        self.last_poll_duration_s = 0.0

    # -- the two passes ---------------------------------------------------

    def poll_disks(self) -> list[Event]:
        """Poll every disk and array, re-map the volumes; return the events published."""
        started = time.monotonic()
        try:
            with self._discovering:
                result = self._poller.run_once()
                beneath = self._mapper.beneath([v.path for v in self._volumes()])
        except Exception as exc:  # noqa: BLE001 - reported in the snapshot and the log, never fatal
            log.exception("disk health poll failed")
            with self._lock:
                self.polls_total += 1
                self.poll_failures_total += 1
                self._poll_error = f"{type(exc).__name__}: {exc}"
            return self._refresh([])
        devices, arrays = describe(self._disks.last, result.assessments)
        events = [from_hardware(e) for e in result.events]
        with self._lock:
            self._devices, self._arrays, self._beneath = devices, arrays, beneath
            self._polled_at, self._poll_error = self._clock(), ""
            self.polls_total += 1
            self.last_poll_duration_s = time.monotonic() - started
            return self._refresh(events)

    def _map_new_volumes(self) -> None:
        """Which filesystem and devices hold each volume not mapped yet (all of them at start).

        Mapping reads the mount table and lists block devices; a disk poll runs
        smartctl on every disk and can take seconds, and comes every
        poll_interval_s. Without this, the first snapshots (a WatchHealth opened
        at start-up), and a volume added since the last poll, would name no
        filesystem. Disks not yet polled block nothing (see placement.decide).
        """
        paths = [v.path for v in self._volumes()]
        with self._lock:
            unmapped = [p for p in paths if p not in self._beneath]
        # A disk poll under way maps every volume itself; never wait for its smartctl runs.
        if not unmapped or not self._discovering.acquire(blocking=False):
            return
        try:
            beneath = self._mapper.beneath(unmapped)
        except Exception:  # noqa: BLE001 - the next disk poll maps again and reports the failure
            log.exception("mapping volumes to their disks failed")
            return
        finally:
            self._discovering.release()
        with self._lock:
            self._beneath = {**beneath, **self._beneath}  # a disk poll meanwhile knows better

    def check_capacity(self) -> list[Event]:
        """Measure every volume (mapping any new one); return the events published."""
        self._map_new_volumes()
        return self._refresh([])

    def publish(self, event: Event) -> Event:
        """Numbers and publishes an event that comes from elsewhere than the disks (a security alert)."""
        with self._lock:
            self._sequence += 1
            published = dataclasses.replace(event, sequence=self._sequence)
            self._snapshot = dataclasses.replace(self._snapshot, sequence=self._sequence)
            self.events_total[event.kind] += 1
            self._broker.publish(published)
        return published

    # -- reading ----------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        """The current picture."""
        with self._lock:
            return self._snapshot

    @contextlib.contextmanager
    def watch(self) -> Iterator[tuple[Subscription[Event], Iterator[Update]]]:
        """Subscribe: the current snapshot first, then each event, gap-free.

        The snapshot and the subscription are taken under one lock, so no
        event falls between them. After the subscriber's queue overflowed,
        a fresh snapshot replaces the lost events.

        Yields:
            The subscription (close it to end the updates early, e.g. on
            cancellation) and the updates.
        """
        with self._lock:
            subscription = self._broker.subscribe()
            first = self._snapshot
        try:
            yield subscription, self._updates(subscription, first)
        finally:
            subscription.close()

    def _updates(self, subscription: Subscription[Event], first: HealthSnapshot) -> Iterator[Update]:
        seen = first.sequence
        yield Update(snapshot=first)
        for event in subscription:
            dropped = subscription.take_dropped()
            if dropped:
                again = self.snapshot()
                seen = again.sequence
                yield Update(snapshot=again, dropped=dropped)
            if event.sequence > seen:
                seen = event.sequence
                yield Update(event=event)

    @property
    def watchers(self) -> int:
        """Open watch subscriptions."""
        return self._broker.subscribers

    @property
    def events_dropped_total(self) -> int:
        """Events dropped for slow watchers since start."""
        return self._broker.dropped_total

    # -- threads ----------------------------------------------------------

    def start(self) -> None:
        """Map and measure once now (so health is right from the start), then poll in the background."""
        self.check_capacity()
        for name, step, interval, wake in (
            ("health-disks", self.poll_disks, self.settings.poll_interval_s, self._wake),
            ("health-capacity", self.check_capacity, self.settings.capacity_interval_s, None),
        ):
            thread = threading.Thread(target=self._loop, args=(step, interval, wake), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._watcher_factory is not None:
            self._watcher = self._watcher_factory(self.wake)
            self._watcher.start()  # type: ignore[attr-defined]

    def wake(self, action: str = "", name: str = "") -> None:
        """Poll the disks soon (a udev event arrived)."""
        log.info("block device %s %s: polling disk health now", name or "?", action or "changed")
        self._wake.set()

    def stop(self) -> None:
        """Stop the passes and end every watch (watchers get UNAVAILABLE); returns at once."""
        self._stopping.set()
        self._wake.set()
        self._broker.close(SHUTTING_DOWN)
        if self._watcher is not None:
            self._watcher.stop()  # type: ignore[attr-defined]

    def join(self, timeout: float = 1.0) -> None:
        """Wait a little for the passes to end after :meth:`stop`.

        A poll stuck in smartctl ends at its timeout; the threads are daemon
        threads, so the process never waits for them longer than this.
        """
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self, step: Callable[[], object], interval: float, wake: threading.Event | None) -> None:
        while not self._stopping.is_set():
            try:
                step()
            except Exception:  # noqa: BLE001 - a bug in one pass must not end health monitoring
                log.exception("health pass %s failed", getattr(step, "__name__", step))
            if wake is None:
                self._stopping.wait(interval)
                continue
            if wake.wait(interval) and not self._stopping.is_set():
                self._stopping.wait(UDEV_SETTLE_S)
            wake.clear()

    # -- the locked step --------------------------------------------------

    def _refresh(self, incoming: list[Event]) -> list[Event]:
        with self._lock:
            now = self._clock()
            disks = {d.name: Judged(d.node, d.verdict, d.reasons) for d in self._devices}
            arrays = {a.name: Judged(a.name, a.verdict, a.reasons, a.level, a.metrics) for a in self._arrays}
            events = list(incoming)
            states = [self._volume(v, disks, arrays, now, events) for v in self._volumes()]
            published = []
            for event in events:
                self._sequence += 1
                published.append(dataclasses.replace(event, sequence=self._sequence))
            writable = any(s.accepts_writes for s in states)
            self._snapshot = HealthSnapshot(
                devices=tuple(dataclasses.replace(d, volumes=_on(d.name, states, "devices")) for d in self._devices),
                arrays=tuple(dataclasses.replace(a, volumes=_on(a.name, states, "arrays")) for a in self._arrays),
                volumes=tuple(states), tiers=tiers(states), sequence=self._sequence,
                polled_at=self._polled_at, poll_error=self._poll_error, writable=writable,
            )
            for event in published:
                self.events_total[event.kind] += 1
                log.log(logging.WARNING if is_bad(event) else logging.INFO, "health event: %s", event.message)
                self._broker.publish(event)
            if writable != self._writable:
                self._writable = writable
                if not writable:
                    log.error("no volume can take new data: grpc.health.v1 reports NOT_SERVING")
                if self.on_writable is not None:
                    self.on_writable(writable)
            return published

    def _volume(self, volume: TierVolume, disks: dict[str, Judged], arrays: dict[str, Judged], now: float,
                events: list[Event]) -> VolumeState:
        beneath = self._beneath.get(volume.path, Beneath(note="disks not polled yet"))
        placement = decide(beneath, disks, arrays)
        self._apply_block(volume, placement.block_reason)
        usage = self._usage(volume.path)
        seen = self._seen.setdefault(volume.path, _Seen())
        threshold = self.settings.capacity_warning_percent
        above = above_threshold(usage, threshold, seen.above)
        room = _accepts(volume)
        foreign = volume.failed if volume.failed != self._blocked.get(volume.path) else ""
        # A stopped volume's room is unknown: only say "full" when nothing else stopped it.
        reasons = capacity_reasons(usage, threshold, above, room or bool(volume.failed), foreign)
        if placement.block_reason:
            reasons.append(Reason("placement", "writes", "stopped", placement.block_reason,
                                  worst(r.verdict for r in placement.reasons), placement.reasons[0].category))
        reasons += placement.reasons
        verdict = worst(r.verdict for r in reasons)
        label = f"volume {volume.path} ({volume.tier})"
        if above if seen.above is None else above != seen.above:
            events.append(Event(
                EventKind.CAPACITY_THRESHOLD, volume.path, volume.path, now,
                f"{label} is {usage.used_percent:.1f}% full: "
                + (f"at or above {threshold:g}%" if above else f"back below {threshold:g}%"),
                Verdict.HEALTHY if above else Verdict.WARNING, Verdict.WARNING if above else Verdict.HEALTHY,
                tuple(r for r in reasons if r.source == "capacity")))
        if not room if seen.writable is None else room != seen.writable:
            why = placement.block_reason or foreign or "past its high watermark or reserve"
            events.append(Event(
                EventKind.WRITES_RESUMED if room else EventKind.WRITES_STOPPED, volume.path, volume.path, now,
                f"{label} takes new data again" if room else f"{label} takes no new data: {why}",
                reasons=tuple(r for r in reasons if r.verdict is not Verdict.HEALTHY)))
        seen.above, seen.writable = above, room
        return VolumeState(
            tier=volume.tier, volume_id=volume.volume_id, path=volume.path, filesystem=beneath.filesystem,
            mountpoint=beneath.mountpoint, devices=beneath.devices, arrays=beneath.arrays,
            capacity_bytes=usage.used + usage.free, used_bytes=usage.used, free_bytes=usage.free, verdict=verdict,
            reasons=tuple(reasons), accepts_writes=room, block_reason=placement.block_reason,
        )

    def _apply_block(self, volume: TierVolume, reason: str) -> None:
        ours = self._blocked.get(volume.path)
        if reason:
            text = BLOCK_PREFIX + reason
            if volume.failed and volume.failed != ours:
                return  # the storage layer stopped it for its own reason; leave that alone
            if volume.failed != text:
                log.error("volume %s: %s", volume.path, text)
                volume.fail(text)
            self._blocked[volume.path] = text
        elif ours is not None:
            if volume.failed == ours:
                volume.recover(ours)
                log.warning("volume %s takes new data again: the disks beneath it are no longer failing",
                            volume.path)
            del self._blocked[volume.path]


def _accepts(volume: TierVolume) -> bool:
    try:
        return bool(volume.accepts(0))
    except OSError:
        return False


def _on(name: str, states: list[VolumeState], attribute: str) -> tuple[str, ...]:
    return tuple(s.path for s in states if name in getattr(s, attribute))
