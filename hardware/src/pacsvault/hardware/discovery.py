"""Discover block devices with pyudev and map a directory to its disks.

The udev database is optional: minimal systems and containers have no
``/run/udev``, so identity falls back to sysfs attributes (``device/model``,
``serial``, ``wwid``) and the transport to the shape of the sysfs path.
The udev context is injectable so the daemon can share one and tests can
substitute it.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import psutil
import pyudev  # type: ignore[import-untyped]  # pyudev ships no type information

# Linux reports block sizes in 512-byte sectors whatever the hardware uses.
_SECTOR = 512


class Transport(enum.StrEnum):
    """How a block device is attached."""

    NVME = "nvme"
    SATA = "sata"
    SAS = "sas"
    VIRTIO = "virtio"
    USB = "usb"
    LOOP = "loop"
    MD = "md"
    DM = "dm"
    UNKNOWN = "unknown"


# Transports whose disks are real (or emulated) drives rather than layers.
PHYSICAL_TRANSPORTS = frozenset({Transport.NVME, Transport.SATA, Transport.SAS, Transport.VIRTIO,
                                 Transport.USB, Transport.UNKNOWN})
# Transports smartctl can query; virtio-blk has no SMART pass-through.
SMART_TRANSPORTS = frozenset({Transport.NVME, Transport.SATA, Transport.SAS, Transport.USB})


@dataclass(frozen=True)
class BlockDevice:
    """One block device as the kernel sees it.

    Attributes:
        name: Kernel name (``sda``, ``nvme0n1``, ``md0``).
        node: Device node (``/dev/sda``).
        devtype: ``disk`` or ``partition``.
        major_minor: ``"8:0"``.
        model: Model string, ``""`` when unknown.
        serial: Serial number, ``""`` when unknown.
        wwn: World wide name, ``""`` when unknown.
        size_bytes: Capacity in bytes.
        rotational: True for spinning disks (virtio reports 1 by default).
        transport: How it is attached.
        parent: Disk a partition belongs to.
        partitions: Partition names of a disk.
        holders: Devices built on this one (md, dm).
        slaves: Devices this one is built from (md members, dm legs).
        md_level: RAID level of an md device.
    """

    name: str
    node: str
    devtype: str
    major_minor: str
    model: str = ""
    serial: str = ""
    wwn: str = ""
    size_bytes: int = 0
    rotational: bool | None = None
    transport: Transport = Transport.UNKNOWN
    parent: str = ""
    partitions: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    slaves: tuple[str, ...] = ()
    md_level: str = ""

    @property
    def is_physical_disk(self) -> bool:
        """True for whole, non-empty disks that are drives, not layers."""
        return self.devtype == "disk" and self.transport in PHYSICAL_TRANSPORTS and self.size_bytes > 0

    @property
    def smart_capable(self) -> bool:
        """True when smartctl can be expected to read health data."""
        return self.transport in SMART_TRANSPORTS


@dataclass(frozen=True)
class FilesystemDevices:
    """A directory's filesystem and the physical devices under it.

    Attributes:
        path: The directory asked about (resolved).
        mountpoint: Mount point of its filesystem.
        fstype: Filesystem type.
        source: Mount source (``/dev/vda``, ``tmpfs``, ...).
        block_device: Block device holding the filesystem, ``""`` if none.
        devices: Physical disks reached by walking partitions, md and dm.
        note: Why ``devices`` is empty or partial, in words.
    """

    path: str
    mountpoint: str
    fstype: str
    source: str
    block_device: str
    devices: tuple[BlockDevice, ...]
    note: str = ""


class Discovery:
    """Block-device discovery over a (injectable) udev context.

    Args:
        context: pyudev context; a new one when omitted.
    """

    def __init__(self, context: pyudev.Context | None = None) -> None:
        self._context = context if context is not None else pyudev.Context()

    def block_devices(self) -> list[BlockDevice]:
        """Every block device (disks and partitions), sorted by name."""
        found = [self._describe(d) for d in self._context.list_devices(subsystem="block")]
        return sorted(found, key=lambda d: d.name)

    def physical_disks(self) -> list[BlockDevice]:
        """Whole drives worth a health check (no loop, md, dm, empty devices)."""
        return [d for d in self.block_devices() if d.is_physical_disk]

    def md_arrays(self) -> dict[str, tuple[str, ...]]:
        """md arrays and their member devices, from sysfs ``slaves``."""
        return {d.name: d.slaves for d in self.block_devices() if d.transport is Transport.MD}

    def devices_under(self, path: str | os.PathLike[str]) -> FilesystemDevices:
        """Find the filesystem holding ``path`` and the disks beneath it.

        Args:
            path: Any path; it is resolved first.

        Returns:
            The filesystem and its physical devices; never raises for paths
            on virtual filesystems (the note then says why none were found).
        """
        real = os.path.realpath(path)
        part = _mount_for(real)
        mountpoint, fstype, source = (part.mountpoint, part.fstype, part.device) if part else ("", "", "")
        number = _block_number(real, source)
        if number is None:
            return FilesystemDevices(real, mountpoint, fstype, source, "", (),
                                     note="filesystem is not backed by a block device (virtual, network or overlay)")
        try:
            top = pyudev.Devices.from_device_number(self._context, "block", number)
        except pyudev.DeviceNotFoundError:
            return FilesystemDevices(real, mountpoint, fstype, source, "", (),
                                     note=f"no block device {os.major(number)}:{os.minor(number)} in sysfs")
        by_name = {d.name: d for d in self.block_devices()}
        leaves = [by_name[n] for n in _leaves(top.sys_name, by_name) if n in by_name]
        note = "" if leaves else "no physical disk found beneath the block device"
        return FilesystemDevices(real, mountpoint, fstype, source, top.sys_name, tuple(leaves), note)

    def _describe(self, device: pyudev.Device) -> BlockDevice:
        sys_path = Path(device.sys_path)
        name = device.sys_name
        is_disk = device.device_type == "disk"
        parent = device.find_parent("block", "disk") if not is_disk else None
        base = sys_path if is_disk else sys_path.parent
        props = device.properties
        return BlockDevice(
            name=name,
            node=device.device_node or f"/dev/{name}",
            devtype=device.device_type or "",
            major_minor=_read(sys_path / "dev"),
            model=props.get("ID_MODEL", "").replace("_", " ") or _read(base / "device" / "model"),
            serial=props.get("ID_SERIAL_SHORT", "") or _read(base / "serial") or _read(base / "device" / "serial"),
            wwn=props.get("ID_WWN", "") or _read(base / "wwid") or _read(base / "device" / "wwid"),
            size_bytes=_int(_read(sys_path / "size")) * _SECTOR,
            rotational=_rotational(base),
            transport=_transport(name if is_disk else (parent.sys_name if parent else name), str(base), props),
            parent=parent.sys_name if parent is not None else "",
            partitions=_partitions(sys_path) if is_disk else (),
            holders=_listdir(sys_path / "holders"),
            slaves=_listdir(sys_path / "slaves"),
            md_level=_read(sys_path / "md" / "level"),
        )


def devices_under(path: str | os.PathLike[str], discovery: Discovery | None = None) -> FilesystemDevices:
    """Module-level shortcut for :meth:`Discovery.devices_under`."""
    return (discovery or Discovery()).devices_under(path)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _listdir(path: Path) -> tuple[str, ...]:
    try:
        return tuple(sorted(p.name for p in path.iterdir()))
    except OSError:
        return ()


def _partitions(sys_path: Path) -> tuple[str, ...]:
    # Partitions are the child directories that carry a "partition" file.
    return tuple(n for n in _listdir(sys_path) if (sys_path / n / "partition").exists())


def _rotational(base: Path) -> bool | None:
    value = _read(base / "queue" / "rotational")
    return None if value == "" else value == "1"


def _transport(disk_name: str, sys_path: str, props: Mapping[str, str]) -> Transport:
    for prefix, transport in (("loop", Transport.LOOP), ("md", Transport.MD), ("dm-", Transport.DM),
                              ("nvme", Transport.NVME)):
        if disk_name.startswith(prefix):
            return transport
    # Path shapes are checked before udev's ID_BUS because they exist even
    # without a udev database, and ID_BUS says "ata" for SATA disks behind
    # USB bridges.
    for marker, transport in (("/usb", Transport.USB), ("/virtio", Transport.VIRTIO),
                              ("/end_device-", Transport.SAS), ("/ata", Transport.SATA)):
        if marker in sys_path:
            return transport
    bus = props.get("ID_BUS", "")
    return {"ata": Transport.SATA, "usb": Transport.USB}.get(bus, Transport.UNKNOWN)


def _mount_for(real: str) -> Any:
    """psutil partition entry with the longest mount point containing ``real``."""
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(best.mountpoint)):
            best = part
    return best


def _block_number(real: str, source: str) -> int | None:
    """Device number of the block device holding ``real``, if any."""
    st_dev = os.stat(real).st_dev
    if os.major(st_dev) != 0:
        return st_dev
    # Major 0 is an anonymous device: tmpfs, overlay, or btrfs (which gives
    # each subvolume its own); for btrfs the mount source still names the disk.
    if source.startswith("/dev/"):
        try:
            return os.stat(source).st_rdev or None
        except OSError:
            return None
    return None


def _leaves(name: str, by_name: dict[str, BlockDevice], depth: int = 0) -> list[str]:
    """Walk partition -> disk and md/dm -> slaves down to physical disks."""
    device = by_name.get(name)
    if device is None or depth > 16:
        return []
    if device.devtype == "partition":
        return _leaves(device.parent, by_name, depth + 1)
    if device.slaves:
        found: list[str] = []
        for slave in device.slaves:
            found += [n for n in _leaves(slave, by_name, depth + 1) if n not in found]
        return found
    return [name] if device.transport in PHYSICAL_TRANSPORTS else []
