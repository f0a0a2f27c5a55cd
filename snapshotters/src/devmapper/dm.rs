//! The device-mapper ioctl interface on `/dev/mapper/control`, written against the kernel's
//! `include/uapi/linux/dm-ioctl.h` (interface version 4).
//!
//! # Why ioctls and not `dmsetup`
//!
//! containerd's devmapper snapshotter runs `dmsetup` for every operation and recovers the errno
//! by matching the English text after `failed: ` in its output (`dmsetup.go`,
//! `tryGetUnixError`). Berth talks to the kernel directly:
//!
//! - No process per operation. On the development host 100 runs of `dmsetup version` (which
//!   there fails at once, the kernel having no device-mapper, so this is the bare cost of
//!   starting it) took 0.22 s: about 2.2 ms each, before it has done any work. In the QEMU
//!   guest the tests run in (TCG emulation), `ioctl_round_trip_cost` in `pool.rs`'s kernel
//!   tests measured one `DM_VERSION` ioctl at 21 to 42 us and one `dmsetup version` (the same
//!   ioctl plus starting the process) at 56 to 69 ms. A snapshot create is six device-mapper
//!   operations (suspend, message, resume of the origin; create, load, resume of the
//!   snapshot), and a prepare of an image with many layers does that per layer.
//! - Errors are errnos from the kernel ([`DmError::Ioctl`]), classed once ([`DmError::kind`]):
//!   `ENXIO` is "no such device", `EEXIST` "name or thin id taken", `ENODATA` "no such thin id".
//!   No parsing of a tool's text, which changes with its version and locale.
//! - One dependency less at run time: `dmsetup` need not be installed beside berthd.
//!
//! The `devicemapper` crate (stratis-storage/devicemapper-rs) was considered and not taken.
//! Checked in its sources (devicemapper 0.34.8, devicemapper-sys 0.3.3): devicemapper-sys's
//! `build.rs` probes `libdevmapper >= 1.02.151` with pkg-config and runs `bindgen` 0.72 on
//! `dm-ioctl.h` and `libdevmapper.h`, so building Berth would need `libdevmapper-dev` and
//! libclang (neither is on the development host, which has `libclang-cpp14` but no
//! `libclang.so`; a `cargo build` of devicemapper 0.34.8 there stops in devicemapper-sys's
//! build script: pkg-config finds no `devmapper.pc`), and berthd would link `libdevmapper`.
//! Its `ThinPoolDev::new` takes the metadata and data devices as its own `LinearDev`s
//! (device-mapper linear devices it creates over the block devices), so the pool's table names
//! those rather than containerd's `thin-pool <meta device> <data device> ...` on the configured
//! devices, and it synchronises with udev through SysV semaphores. (Its thin ids are the
//! caller's 24-bit `ThinDevId`, so containerd's id scheme could have been kept; the build
//! dependencies and the pool layout decided it.) What Berth needs is nine ioctls and three
//! buffer layouts, which this module states and its unit tests pin down.
//!
//! # Buffers
//!
//! Every ioctl passes one buffer: a `struct dm_ioctl` header ([`DmIoctl`], 312 bytes) whose
//! `data_size` is the size of the whole buffer and whose `data_start` is the offset of the
//! payload (a table, a message) or of the kernel's answer (a status, a name list, a message's
//! output). When the answer does not fit, the kernel sets `DM_BUFFER_FULL_FLAG` and the call is
//! repeated with a buffer twice the size.
//!
//! There is no udev in the QEMU guest and none is needed: the kernel's devtmpfs makes
//! `/dev/dm-N`, and [`ensure_node`] makes `/dev/mapper/<name>` as `dmsetup` does with
//! `--noudevsync`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::stat::{major, makedev, minor, mknod, Mode, SFlag};

use berth_registry::ErrorKind;

/// Bytes in a device-mapper sector.
pub const SECTOR_SIZE: u64 = 512;
/// Where device-mapper's nodes live.
pub const MAPPER_DIR: &str = "/dev/mapper";
/// The control node.
pub const CONTROL_PATH: &str = "/dev/mapper/control";
/// The misc major; device-mapper's control node is a misc device.
const MISC_MAJOR: u64 = 10;

const DM_IOCTL: u8 = 0xfd;
const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;
const DM_MAX_TYPE_NAME: usize = 16;

/// Interface version sent: major 4 is required; minor 0 is accepted by every v4 kernel
/// (the kernel refuses only a minor newer than its own).
const VERSION: [u32; 3] = [4, 0, 0];

// Commands (enum in dm-ioctl.h).
const DM_VERSION_CMD: u8 = 0;
const DM_LIST_DEVICES_CMD: u8 = 2;
const DM_DEV_CREATE_CMD: u8 = 3;
const DM_DEV_REMOVE_CMD: u8 = 4;
const DM_DEV_SUSPEND_CMD: u8 = 6;
const DM_DEV_STATUS_CMD: u8 = 7;
const DM_TABLE_LOAD_CMD: u8 = 9;
const DM_TABLE_STATUS_CMD: u8 = 12;
const DM_TARGET_MSG_CMD: u8 = 14;

// Flags.
const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_SUSPEND_FLAG: u32 = 1 << 1;
const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
const DM_ACTIVE_PRESENT_FLAG: u32 = 1 << 5;
const DM_INACTIVE_PRESENT_FLAG: u32 = 1 << 6;
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
const DM_DATA_OUT_FLAG: u32 = 1 << 16;
const DM_DEFERRED_REMOVE: u32 = 1 << 17;

/// First buffer size; doubled on `DM_BUFFER_FULL_FLAG` up to [`MAX_BUFFER`].
const INITIAL_BUFFER: usize = 16 * 1024;
const MAX_BUFFER: usize = 32 * 1024 * 1024;

/// How often and how long [`Control::remove`] waits out `EBUSY` (containerd's `retry`:
/// 100 tries, 100 ms apart).
const REMOVE_RETRIES: u32 = 100;
const REMOVE_RETRY_DELAY: Duration = Duration::from_millis(100);

/// `struct dm_ioctl`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; DM_NAME_LEN],
    uuid: [u8; DM_UUID_LEN],
    data: [u8; 7],
}

/// `struct dm_target_spec` (the parameter string follows it).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; DM_MAX_TYPE_NAME],
}

const HEADER: usize = std::mem::size_of::<DmIoctl>();
const SPEC: usize = std::mem::size_of::<DmTargetSpec>();
/// `offsetof(struct dm_name_list, name)`.
const NAME_LIST_NAME: usize = 12;
/// `offsetof(struct dm_target_msg, message)`.
const TARGET_MSG_MESSAGE: usize = 8;

/// Why a device-mapper operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// The kernel has no device-mapper, or its control node cannot be opened.
    #[error("{reason}")]
    Unavailable {
        /// Says that device-mapper is missing and what showed it.
        reason: String,
    },
    /// An ioctl failed.
    #[error("device-mapper {op} {name}: {}", errno.desc())]
    Ioctl {
        /// The operation (`create`, `remove`, `message create_thin 3`, ...).
        op: String,
        /// The device it was done to (empty for `version` and `list`).
        name: String,
        /// The kernel's errno.
        errno: Errno,
    },
    /// A file or node operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A device name, uuid, target type or message that the interface cannot carry.
    #[error("device-mapper {what} {value:?}: {reason}")]
    Invalid {
        /// `name`, `uuid`, `target type`, `message`, `table`.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The kernel's answer did not have the expected form.
    #[error("device-mapper {op} {name}: unexpected answer: {what}")]
    Parse {
        /// The operation.
        op: String,
        /// The device.
        name: String,
        /// What was wrong.
        what: String,
    },
}

impl DmError {
    fn ioctl(op: impl Into<String>, name: &str, errno: Errno) -> Self {
        DmError::Ioctl {
            op: op.into(),
            name: name.to_string(),
            errno,
        }
    }

    pub(crate) fn parse(op: impl Into<String>, name: &str, what: impl Into<String>) -> Self {
        DmError::Parse {
            op: op.into(),
            name: name.to_string(),
            what: what.into(),
        }
    }

    fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DmError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The kernel's errno, for an ioctl that failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            DmError::Ioctl { errno, .. } => Some(*errno),
            DmError::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    /// The device (`ENXIO`) or the thin id (`ENODATA`) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(Errno::ENXIO | Errno::ENODATA))
    }

    /// The name, uuid or thin id is taken (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST)
    }

    /// The errdefs class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DmError::Unavailable { .. } => ErrorKind::FailedPrecondition,
            DmError::Invalid { .. } => ErrorKind::InvalidArgument,
            DmError::Parse { .. } => ErrorKind::Internal,
            DmError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            DmError::Io { .. } => ErrorKind::Internal,
            DmError::Ioctl { errno, .. } => match errno {
                Errno::ENXIO | Errno::ENODATA | Errno::ENOENT => ErrorKind::NotFound,
                Errno::EEXIST => ErrorKind::AlreadyExists,
                Errno::ENOSPC => ErrorKind::ResourceExhausted,
                Errno::EBUSY => ErrorKind::FailedPrecondition,
                Errno::EINVAL => ErrorKind::InvalidArgument,
                _ => ErrorKind::Internal,
            },
        }
    }
}

/// One line of a table: `<start> <length> <target type> <params>`, sectors. As the answer of
/// [`Control::status`], `params` is the target's status text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub length: u64,
    /// `thin-pool`, `thin`, `linear`, ...
    pub target_type: String,
    /// The target's parameters (or status).
    pub params: String,
}

/// What `DM_DEV_STATUS` says of a device (`dmsetup info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    /// Its name.
    pub name: String,
    /// Its uuid, empty if it has none.
    pub uuid: String,
    /// Its block device number (`dev_t`).
    pub dev: u64,
    /// How many openers it has.
    pub open_count: i32,
    /// Targets in its live table.
    pub target_count: u32,
    /// Its event counter.
    pub event_nr: u32,
    /// Suspended.
    pub suspended: bool,
    /// Read-only.
    pub read_only: bool,
    /// It has a live table (it is active).
    pub active_table: bool,
    /// A table is loaded and waits for a resume.
    pub inactive_table: bool,
    /// A deferred remove is pending.
    pub deferred_remove: bool,
}

impl DevInfo {
    /// The block device's major number.
    pub fn major(&self) -> u64 {
        major(self.dev)
    }

    /// The block device's minor number.
    pub fn minor(&self) -> u64 {
        minor(self.dev)
    }
}

/// The path of a device-mapper device's node, `/dev/mapper/<name>`.
pub fn device_path(name: &str) -> PathBuf {
    Path::new(MAPPER_DIR).join(name)
}

/// `Err(reason)` when this kernel has no device-mapper (the plugin's skip reason).
pub fn availability() -> Result<(), String> {
    let control = Control::open().map_err(|e| e.to_string())?;
    control.version().map(|_| ()).map_err(|e| match e {
        DmError::Ioctl { errno, .. } => {
            format!("device-mapper is missing: {CONTROL_PATH} answers no DM_VERSION ({errno})")
        }
        other => other.to_string(),
    })
}

/// The minor number of `device-mapper` in `/proc/misc` (`<minor> <name>` per line).
fn misc_minor(proc_misc: &str) -> Option<u64> {
    proc_misc.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let minor = fields.next()?.parse().ok()?;
        (fields.next()? == "device-mapper").then_some(minor)
    })
}

/// An open `/dev/mapper/control`. Every call is one or a few blocking ioctls; call from
/// blocking code.
#[derive(Debug)]
pub struct Control {
    file: File,
}

/// A dm ioctl buffer: the header and room for the payload, 8-byte aligned as the kernel's
/// structures are.
struct Buffer {
    words: Vec<u64>,
}

impl Buffer {
    fn new(size: usize) -> Self {
        let mut buf = Buffer {
            words: vec![0; size.div_ceil(8)],
        };
        let mut header = buf.header();
        header.version = VERSION;
        header.data_size = buf.len() as u32;
        header.data_start = HEADER as u32;
        buf.set_header(&header);
        buf
    }

    fn len(&self) -> usize {
        self.words.len() * 8
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: u64s are initialised memory; a u8 view of them has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        // SAFETY: as in `bytes`; every byte pattern is a valid u64.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), len) }
    }

    fn header(&self) -> DmIoctl {
        // SAFETY: the buffer is at least HEADER bytes, 8-byte aligned, and DmIoctl is plain
        // integers and byte arrays.
        unsafe { std::ptr::read(self.words.as_ptr().cast::<DmIoctl>()) }
    }

    fn set_header(&mut self, header: &DmIoctl) {
        // SAFETY: as in `header`.
        unsafe { std::ptr::write(self.words.as_mut_ptr().cast::<DmIoctl>(), *header) }
    }

    /// The kernel's answer: `data_start..data_size`, bounded by the buffer.
    fn answer(&self) -> &[u8] {
        let h = self.header();
        let end = (h.data_size as usize).min(self.len());
        let start = (h.data_start as usize).min(end);
        &self.bytes()[start..end]
    }
}

/// Copies `value` into a fixed NUL-terminated field.
fn put_str(field: &mut [u8], value: &str, what: &'static str) -> Result<(), DmError> {
    let bytes = value.as_bytes();
    if bytes.len() >= field.len() {
        return Err(DmError::Invalid {
            what,
            value: value.to_string(),
            reason: "too long",
        });
    }
    if bytes.contains(&0) {
        return Err(DmError::Invalid {
            what,
            value: value.to_string(),
            reason: "contains a NUL byte",
        });
    }
    field[..bytes.len()].copy_from_slice(bytes);
    field[bytes.len()..].fill(0);
    Ok(())
}

/// The string before the first NUL of `bytes` (all of it if none).
fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Checks a device name as the kernel and `dmsetup` do: not empty, no `/`, not `.`/`..`,
/// shorter than `DM_NAME_LEN`.
pub(crate) fn check_name(name: &str) -> Result<(), DmError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.contains('/') {
        "contains a slash"
    } else if name == "." || name == ".." {
        "is not a usable node name"
    } else if name.len() >= DM_NAME_LEN {
        "is longer than 127 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(DmError::Invalid {
        what: "device name",
        value: name.to_string(),
        reason,
    })
}

/// Encodes a table for `DM_TABLE_LOAD`: one `dm_target_spec` per target, its parameters
/// NUL-terminated and padded to 8 bytes; `next` is the distance from this spec to the next.
pub(crate) fn encode_targets(targets: &[Target]) -> Result<Vec<u8>, DmError> {
    let mut out = Vec::new();
    for target in targets {
        let mut target_type = [0u8; DM_MAX_TYPE_NAME];
        put_str(&mut target_type, &target.target_type, "target type")?;
        if target.params.contains('\0') {
            return Err(DmError::Invalid {
                what: "table",
                value: target.params.clone(),
                reason: "contains a NUL byte",
            });
        }
        let record = (SPEC + target.params.len() + 1).next_multiple_of(8);
        let start = out.len();
        out.resize(start + record, 0);
        let rec = &mut out[start..];
        rec[0..8].copy_from_slice(&target.start.to_ne_bytes());
        rec[8..16].copy_from_slice(&target.length.to_ne_bytes());
        rec[16..20].copy_from_slice(&0i32.to_ne_bytes());
        rec[20..24].copy_from_slice(&(record as u32).to_ne_bytes());
        rec[24..SPEC].copy_from_slice(&target_type);
        rec[SPEC..SPEC + target.params.len()].copy_from_slice(target.params.as_bytes());
    }
    Ok(out)
}

/// The native-endian u64 at `at` (the caller has checked the length).
fn ne_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

/// The native-endian u32 at `at` (the caller has checked the length).
fn ne_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(word)
}

/// Decodes `DM_TABLE_STATUS`'s answer: `count` specs; there `next` is the offset of the next
/// spec from the first one.
pub(crate) fn decode_targets(data: &[u8], count: u32) -> Result<Vec<Target>, String> {
    let mut targets = Vec::with_capacity(count as usize);
    let mut offset = 0usize;
    for i in 0..count {
        let spec = data
            .get(offset..offset + SPEC)
            .ok_or_else(|| format!("target {i} at offset {offset} is past the answer"))?;
        let u64_at = |at: usize| ne_u64(spec, at);
        let next = ne_u32(spec, 20) as usize;
        let params_end = if i + 1 < count { next } else { data.len() };
        if i + 1 < count && next <= offset {
            return Err(format!("target {i} points back to offset {next}"));
        }
        let params = data
            .get(offset + SPEC..params_end.max(offset + SPEC))
            .ok_or_else(|| format!("target {i}'s parameters are past the answer"))?;
        targets.push(Target {
            start: u64_at(0),
            length: u64_at(8),
            target_type: c_str(&spec[24..SPEC]),
            params: c_str(params),
        });
        offset = next;
    }
    Ok(targets)
}

/// Decodes `DM_LIST_DEVICES`'s answer: `dm_name_list` records, `next` the distance to the
/// following record (0 on the last); a first record with `dev == 0` means no devices.
pub(crate) fn decode_name_list(data: &[u8]) -> Result<Vec<(String, u64)>, String> {
    let mut devices = Vec::new();
    let mut offset = 0usize;
    loop {
        let rec = data
            .get(offset..)
            .filter(|r| r.len() >= NAME_LIST_NAME)
            .ok_or_else(|| format!("name list record at offset {offset} is past the answer"))?;
        let dev = ne_u64(rec, 0);
        let next = ne_u32(rec, 8) as usize;
        if dev == 0 && offset == 0 {
            return Ok(devices);
        }
        devices.push((c_str(&rec[NAME_LIST_NAME..]), dev));
        if next == 0 {
            return Ok(devices);
        }
        offset += next;
    }
}

impl Control {
    /// Opens `/dev/mapper/control`. When `/proc/misc` names device-mapper and the node is
    /// missing or has another number, (re)makes it there, as libdevmapper does.
    pub fn open() -> Result<Control, DmError> {
        let misc = std::fs::read_to_string("/proc/misc")
            .map_err(|e| DmError::io("read", "/proc/misc", e))?;
        let control = Path::new(CONTROL_PATH);
        match (misc_minor(&misc), std::fs::metadata(control)) {
            (Some(minor), Ok(meta))
                if meta.file_type().is_char_device()
                    && meta.rdev() == makedev(MISC_MAJOR, minor) => {}
            (Some(minor), existing) => {
                if existing.is_ok() {
                    std::fs::remove_file(control)
                        .map_err(|e| DmError::io("remove stale", control, e))?;
                }
                std::fs::create_dir_all(MAPPER_DIR)
                    .map_err(|e| DmError::io("create", MAPPER_DIR, e))?;
                match mknod(
                    control,
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o600),
                    makedev(MISC_MAJOR, minor),
                ) {
                    // Another opener made it meanwhile.
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(DmError::io("mknod", control, e.into())),
                }
            }
            // Not loaded yet: opening an existing node may load dm-mod (its module alias).
            (None, Ok(_)) => {}
            (None, Err(_)) => {
                return Err(DmError::Unavailable {
                    reason: format!(
                        "device-mapper is missing: /proc/misc has no device-mapper and \
                         {CONTROL_PATH} does not exist"
                    ),
                })
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(control)
            .map_err(|e| match e.raw_os_error() {
                Some(code)
                    if code == Errno::ENODEV as i32
                        || code == Errno::ENXIO as i32
                        || misc_minor(&misc).is_none() =>
                {
                    DmError::Unavailable {
                        reason: format!(
                            "device-mapper is missing: /proc/misc has no device-mapper and \
                             open {CONTROL_PATH}: {e}"
                        ),
                    }
                }
                _ => DmError::io("open", control, e),
            })?;
        Ok(Control { file })
    }

    /// One ioctl with `buf`, repeated with a doubled buffer while the kernel says it is full
    /// (not for a message, which is not repeated). `fill` writes the request into a fresh
    /// buffer.
    fn call(
        &self,
        cmd: u8,
        op: &str,
        name: &str,
        payload: usize,
        fill: &dyn Fn(&mut Buffer) -> Result<(), DmError>,
    ) -> Result<Buffer, DmError> {
        let mut size = (HEADER + payload).max(INITIAL_BUFFER);
        loop {
            let mut buf = Buffer::new(size);
            fill(&mut buf)?;
            let request = nix::request_code_readwrite!(DM_IOCTL, cmd, HEADER);
            // SAFETY: the buffer starts with a dm_ioctl whose data_size is the buffer's
            // length; the kernel reads and writes only within it.
            let rc = unsafe {
                nix::libc::ioctl(
                    self.file.as_raw_fd(),
                    request as _,
                    buf.words.as_mut_ptr().cast::<DmIoctl>(),
                )
            };
            Errno::result(rc).map_err(|errno| DmError::ioctl(op, name, errno))?;
            if buf.header().flags & DM_BUFFER_FULL_FLAG == 0 {
                return Ok(buf);
            }
            // A message has been acted on by the time its answer overflows: sending it again
            // would act twice. (Thin-pool messages answer nothing.)
            if cmd == DM_TARGET_MSG_CMD {
                return Err(DmError::parse(
                    op,
                    name,
                    format!("the answer is larger than {size} bytes (the message was sent)"),
                ));
            }
            if size >= MAX_BUFFER {
                return Err(DmError::parse(
                    op,
                    name,
                    format!("answer larger than {MAX_BUFFER} bytes"),
                ));
            }
            size *= 2;
        }
    }

    /// A call on the device `name` with flags and no payload.
    fn call_named(&self, cmd: u8, op: &str, name: &str, flags: u32) -> Result<Buffer, DmError> {
        check_name(name)?;
        self.call(cmd, op, name, 0, &|buf| {
            let mut h = buf.header();
            put_str(&mut h.name, name, "device name")?;
            h.flags = flags;
            buf.set_header(&h);
            Ok(())
        })
    }

    /// The kernel's device-mapper interface version (`dmsetup version`'s "Driver version").
    pub fn version(&self) -> Result<[u32; 3], DmError> {
        let buf = self.call(DM_VERSION_CMD, "version", "", 0, &|_| Ok(()))?;
        Ok(buf.header().version)
    }

    /// Creates the device `name` with no table (`dmsetup create --notable`); `uuid` may be
    /// empty. `EEXIST` (the kernel says `EBUSY`) when the name or uuid is taken.
    pub fn create(&self, name: &str, uuid: &str) -> Result<DevInfo, DmError> {
        check_name(name)?;
        let buf = self
            .call(DM_DEV_CREATE_CMD, "create", name, 0, &|buf| {
                let mut h = buf.header();
                put_str(&mut h.name, name, "device name")?;
                put_str(&mut h.uuid, uuid, "uuid")?;
                buf.set_header(&h);
                Ok(())
            })
            // The kernel's dm_hash_insert answers a taken name or uuid with EBUSY ("device
            // or resource busy" from dmsetup); it is the name that exists.
            .map_err(|e| match e {
                DmError::Ioctl {
                    op,
                    name,
                    errno: Errno::EBUSY,
                } => DmError::Ioctl {
                    op,
                    name,
                    errno: Errno::EEXIST,
                },
                other => other,
            })?;
        Ok(dev_info(&buf.header()))
    }

    /// Loads `targets` into the device's inactive slot; [`Control::resume`] makes it live.
    pub fn load_table(&self, name: &str, targets: &[Target]) -> Result<(), DmError> {
        check_name(name)?;
        let table = encode_targets(targets)?;
        self.call(DM_TABLE_LOAD_CMD, "load table", name, table.len(), &|buf| {
            let mut h = buf.header();
            put_str(&mut h.name, name, "device name")?;
            h.target_count = targets.len() as u32;
            buf.set_header(&h);
            buf.bytes_mut()[HEADER..HEADER + table.len()].copy_from_slice(&table);
            Ok(())
        })?;
        Ok(())
    }

    /// Suspends the device: flushes and holds its I/O.
    pub fn suspend(&self, name: &str) -> Result<(), DmError> {
        self.call_named(DM_DEV_SUSPEND_CMD, "suspend", name, DM_SUSPEND_FLAG)?;
        Ok(())
    }

    /// Resumes the device, making a loaded table live; returns its `dev_t`.
    pub fn resume(&self, name: &str) -> Result<u64, DmError> {
        let buf = self.call_named(DM_DEV_SUSPEND_CMD, "resume", name, 0)?;
        Ok(buf.header().dev)
    }

    fn remove_with(&self, name: &str, flags: u32) -> Result<(), DmError> {
        let mut tries = 0;
        loop {
            match self.call_named(DM_DEV_REMOVE_CMD, "remove", name, flags) {
                Err(e) if e.errno() == Some(Errno::EBUSY) && tries + 1 < REMOVE_RETRIES => {
                    tries += 1;
                    if tries % 10 == 0 {
                        tracing::warn!(
                            device = name,
                            tries,
                            "device-mapper remove: busy, retrying"
                        );
                    }
                    std::thread::sleep(REMOVE_RETRY_DELAY);
                }
                other => return other.map(|_| ()),
            }
        }
    }

    /// Removes the device (`dmsetup remove --retry`): `EBUSY` (an opener such as a mount or
    /// a scanning tool) is retried for up to 10 s, then returned. `ENXIO` if there is none.
    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        self.remove_with(name, 0)
    }

    /// Removes the device, or marks it for removal at its last close if it is open
    /// (`dmsetup remove --deferred`).
    pub fn remove_deferred(&self, name: &str) -> Result<(), DmError> {
        self.remove_with(name, DM_DEFERRED_REMOVE)
    }

    /// Sends a target message (`dmsetup message <name> <sector> <msg>`); returns the
    /// target's answer when it gave one.
    pub fn message(&self, name: &str, sector: u64, msg: &str) -> Result<Option<String>, DmError> {
        check_name(name)?;
        if msg.contains('\0') || msg.is_empty() {
            return Err(DmError::Invalid {
                what: "message",
                value: msg.to_string(),
                reason: "is empty or contains a NUL byte",
            });
        }
        let op = format!("message {msg}");
        let payload = TARGET_MSG_MESSAGE + msg.len() + 1;
        let buf = self.call(DM_TARGET_MSG_CMD, &op, name, payload, &|buf| {
            let mut h = buf.header();
            put_str(&mut h.name, name, "device name")?;
            buf.set_header(&h);
            let bytes = buf.bytes_mut();
            bytes[HEADER..HEADER + 8].copy_from_slice(&sector.to_ne_bytes());
            let at = HEADER + TARGET_MSG_MESSAGE;
            bytes[at..at + msg.len()].copy_from_slice(msg.as_bytes());
            Ok(())
        })?;
        if buf.header().flags & DM_DATA_OUT_FLAG == 0 {
            return Ok(None);
        }
        Ok(Some(c_str(buf.answer())))
    }

    fn table_status(&self, name: &str, flags: u32, op: &str) -> Result<Vec<Target>, DmError> {
        let buf = self.call_named(DM_TABLE_STATUS_CMD, op, name, flags)?;
        decode_targets(buf.answer(), buf.header().target_count)
            .map_err(|what| DmError::parse(op, name, what))
    }

    /// The live table's status lines (`dmsetup status`).
    pub fn status(&self, name: &str) -> Result<Vec<Target>, DmError> {
        self.table_status(name, 0, "status")
    }

    /// The live table (`dmsetup table`).
    pub fn table(&self, name: &str) -> Result<Vec<Target>, DmError> {
        self.table_status(name, DM_STATUS_TABLE_FLAG, "table")
    }

    /// The device's state (`dmsetup info`); `None` when there is no such device.
    pub fn info(&self, name: &str) -> Result<Option<DevInfo>, DmError> {
        match self.call_named(DM_DEV_STATUS_CMD, "info", name, 0) {
            Ok(buf) => Ok(Some(dev_info(&buf.header()))),
            Err(e) if e.errno() == Some(Errno::ENXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every device-mapper device: its name and `dev_t` (`dmsetup ls`).
    pub fn list(&self) -> Result<Vec<(String, u64)>, DmError> {
        let buf = self.call(DM_LIST_DEVICES_CMD, "list", "", 0, &|_| Ok(()))?;
        decode_name_list(buf.answer()).map_err(|what| DmError::parse("list", "", what))
    }
}

fn dev_info(h: &DmIoctl) -> DevInfo {
    DevInfo {
        name: c_str(&h.name),
        uuid: c_str(&h.uuid),
        dev: h.dev,
        open_count: h.open_count,
        target_count: h.target_count,
        event_nr: h.event_nr,
        suspended: h.flags & DM_SUSPEND_FLAG != 0,
        read_only: h.flags & DM_READONLY_FLAG != 0,
        active_table: h.flags & DM_ACTIVE_PRESENT_FLAG != 0,
        inactive_table: h.flags & DM_INACTIVE_PRESENT_FLAG != 0,
        deferred_remove: h.flags & DM_DEFERRED_REMOVE != 0,
    }
}

/// Makes `/dev/mapper/<name>` a block node of `dev` (replacing a node with another number;
/// a symlink to the right node, as udev makes, stays) and returns its path. Without udev
/// nobody else makes it.
pub fn ensure_node(name: &str, dev: u64) -> Result<PathBuf, DmError> {
    check_name(name)?;
    let path = device_path(name);
    // On a host with udev, its rules may have made the name a symlink to ../dm-N: following
    // it is right when it leads to this device.
    let right = |meta: &std::fs::Metadata| meta.file_type().is_block_device() && meta.rdev() == dev;
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if right(&meta) => return Ok(path),
        Ok(meta)
            if meta.file_type().is_symlink()
                && std::fs::metadata(&path).is_ok_and(|m| right(&m)) =>
        {
            return Ok(path)
        }
        Ok(_) => std::fs::remove_file(&path).map_err(|e| DmError::io("remove stale", &path, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DmError::io("stat", &path, e)),
    }
    std::fs::create_dir_all(MAPPER_DIR).map_err(|e| DmError::io("create", MAPPER_DIR, e))?;
    mknod(&path, SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), dev)
        .map_err(|e| DmError::io("mknod", &path, e.into()))?;
    Ok(path)
}

/// Removes `/dev/mapper/<name>`; a missing node is fine.
pub fn remove_node(name: &str) -> Result<(), DmError> {
    check_name(name)?;
    let path = device_path(name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DmError::io("remove", &path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn structs_match_dm_ioctl_h() {
        assert_eq!(size_of::<DmIoctl>(), 312);
        assert_eq!(offset_of!(DmIoctl, data_size), 12);
        assert_eq!(offset_of!(DmIoctl, data_start), 16);
        assert_eq!(offset_of!(DmIoctl, target_count), 20);
        assert_eq!(offset_of!(DmIoctl, open_count), 24);
        assert_eq!(offset_of!(DmIoctl, flags), 28);
        assert_eq!(offset_of!(DmIoctl, event_nr), 32);
        assert_eq!(offset_of!(DmIoctl, dev), 40);
        assert_eq!(offset_of!(DmIoctl, name), 48);
        assert_eq!(offset_of!(DmIoctl, uuid), 176);
        assert_eq!(offset_of!(DmIoctl, data), 305);
        assert_eq!(size_of::<DmTargetSpec>(), 40);
        assert_eq!(offset_of!(DmTargetSpec, next), 20);
        assert_eq!(offset_of!(DmTargetSpec, target_type), 24);
        // _IOWR(0xfd, cmd, struct dm_ioctl): dir 3 << 30, size 312 << 16, type 0xfd << 8.
        assert_eq!(
            nix::request_code_readwrite!(DM_IOCTL, DM_VERSION_CMD, HEADER),
            0xc138_fd00
        );
        assert_eq!(
            nix::request_code_readwrite!(DM_IOCTL, DM_TARGET_MSG_CMD, HEADER),
            0xc138_fd0e
        );
    }

    #[test]
    fn a_fresh_buffer_carries_version_size_and_data_start() {
        let buf = Buffer::new(1000);
        let h = buf.header();
        assert_eq!(h.version, [4, 0, 0]);
        assert_eq!(h.data_size as usize, buf.len());
        assert_eq!(buf.len(), 1000);
        assert_eq!(h.data_start, 312);
        assert_eq!(&buf.bytes()[0..4], &4u32.to_ne_bytes());
    }

    #[test]
    fn table_load_encoding_pads_each_target_to_eight_bytes() {
        let targets = [
            Target {
                start: 0,
                length: 2048,
                target_type: "thin".into(),
                params: "/dev/mapper/pool 7".into(),
            },
            Target {
                start: 2048,
                length: 8,
                target_type: "zero".into(),
                params: String::new(),
            },
        ];
        let enc = encode_targets(&targets).unwrap();
        // 40 + 18 + 1 = 59 -> 64; 40 + 0 + 1 -> 48.
        assert_eq!(enc.len(), 64 + 48);
        assert_eq!(u64::from_ne_bytes(enc[8..16].try_into().unwrap()), 2048);
        assert_eq!(u32::from_ne_bytes(enc[20..24].try_into().unwrap()), 64);
        assert_eq!(&enc[24..28], b"thin");
        assert_eq!(enc[28], 0);
        assert_eq!(&enc[40..58], b"/dev/mapper/pool 7");
        assert_eq!(enc[58], 0);
        assert_eq!(u64::from_ne_bytes(enc[64..72].try_into().unwrap()), 2048);
        assert_eq!(u32::from_ne_bytes(enc[84..88].try_into().unwrap()), 48);
        assert_eq!(&enc[88..92], b"zero");

        let bad = Target {
            target_type: "a-target-type-name-too-long".into(),
            ..targets[1].clone()
        };
        let err = encode_targets(&[bad]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("target type"), "{err}");
    }

    /// A `DM_TABLE_STATUS` answer as the kernel's `retrieve_status` lays it out: `next` is
    /// the offset from the first spec.
    fn status_answer(lines: &[(u64, u64, &str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (start, length, kind, text) in lines {
            let at = out.len();
            out.resize(at + SPEC, 0);
            out[at..at + 8].copy_from_slice(&start.to_ne_bytes());
            out[at + 8..at + 16].copy_from_slice(&length.to_ne_bytes());
            out[at + 24..at + 24 + kind.len()].copy_from_slice(kind.as_bytes());
            out.extend_from_slice(text.as_bytes());
            out.push(0);
            let next = out.len().next_multiple_of(8);
            out.resize(next, 0xee);
            out[at + 20..at + 24].copy_from_slice(&(next as u32).to_ne_bytes());
        }
        // The kernel's data_size ends at the last NUL, not at the padding.
        while out.last() == Some(&0xee) {
            out.pop();
        }
        out
    }

    #[test]
    fn status_answers_decode_per_target() {
        let data = status_answer(&[
            (
                0,
                409600,
                "thin-pool",
                "1 4/1024 0/3200 - rw discard_passdown queue_if_no_space - 1024",
            ),
            (409600, 100, "linear", ""),
        ]);
        let targets = decode_targets(&data, 2).unwrap();
        assert_eq!(
            targets,
            vec![
                Target {
                    start: 0,
                    length: 409600,
                    target_type: "thin-pool".into(),
                    params: "1 4/1024 0/3200 - rw discard_passdown queue_if_no_space - 1024".into(),
                },
                Target {
                    start: 409600,
                    length: 100,
                    target_type: "linear".into(),
                    params: String::new(),
                },
            ]
        );
        assert_eq!(decode_targets(&[], 0).unwrap(), vec![]);
        assert!(decode_targets(&data[..30], 1).is_err());
        // A load encoding decodes the same when its nexts are made absolute (one target).
        let one = encode_targets(&targets[..1]).unwrap();
        assert_eq!(decode_targets(&one, 1).unwrap(), targets[..1].to_vec());
    }

    /// A `DM_LIST_DEVICES` answer as the kernel's `list_devices` lays it out: name at offset
    /// 12, then event_nr and flags at the next 8-byte boundary, records 8-byte aligned.
    fn name_list(devices: &[(&str, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev: Option<usize> = None;
        for (name, dev) in devices {
            let at = out.len();
            if let Some(p) = prev {
                out[p + 8..p + 12].copy_from_slice(&((at - p) as u32).to_ne_bytes());
            }
            out.extend_from_slice(&dev.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.resize(out.len().next_multiple_of(8), 0);
            out.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
            prev = Some(at);
        }
        if devices.is_empty() {
            out.resize(16, 0);
        }
        out
    }

    #[test]
    fn name_lists_decode_and_an_empty_one_is_empty() {
        let pool = makedev(253, 0);
        let thin = makedev(253, 300);
        let data = name_list(&[("berth-thinpool", pool), ("berth-snap-12", thin)]);
        assert_eq!(
            decode_name_list(&data).unwrap(),
            vec![
                ("berth-thinpool".into(), pool),
                ("berth-snap-12".into(), thin)
            ]
        );
        assert_eq!(decode_name_list(&name_list(&[])).unwrap(), vec![]);
        assert!(decode_name_list(&data[..5]).is_err());
    }

    #[test]
    fn names_are_checked_as_the_kernel_does() {
        assert!(check_name("berth-snap-1").is_ok());
        for bad in ["", "a/b", "..", &"x".repeat(128)] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().contains("device name"), "{err}");
        }
        let mut field = [0u8; 4];
        assert!(put_str(&mut field, "abcd", "uuid").is_err());
        put_str(&mut field, "abc", "uuid").unwrap();
        assert_eq!(&field, b"abc\0");
    }

    #[test]
    fn proc_misc_gives_the_control_minor() {
        let misc = "229 fuse\n236 device-mapper\n237 loop-control\n";
        assert_eq!(misc_minor(misc), Some(236));
        assert_eq!(misc_minor("229 fuse\n 1 psaux\n"), None);
    }

    #[test]
    fn errnos_are_classed() {
        let e = DmError::ioctl("message create_thin 3", "pool", Errno::EEXIST);
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert!(e.is_exists());
        assert_eq!(
            e.to_string(),
            "device-mapper message create_thin 3 pool: File exists"
        );
        let e = DmError::ioctl("message delete 3", "pool", Errno::ENODATA);
        assert!(e.is_not_found());
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(
            DmError::ioctl("info", "x", Errno::ENXIO).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            DmError::ioctl("remove", "x", Errno::EBUSY).kind(),
            ErrorKind::FailedPrecondition
        );
    }

    /// This host's kernel has no device-mapper: the skip reason says so.
    #[test]
    fn availability_names_device_mapper_when_it_is_missing() {
        let misc = std::fs::read_to_string("/proc/misc").unwrap();
        if misc_minor(&misc).is_some() {
            // A kernel with device-mapper (the guest): it is available to root.
            if nix::unistd::Uid::effective().is_root() {
                availability().unwrap();
            }
            return;
        }
        let reason = availability().unwrap_err();
        assert!(reason.contains("device-mapper is missing"), "{reason}");
    }
}
