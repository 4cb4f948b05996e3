//! Raw loop-device and block-device ioctls.
//!
//! This is the only module of the crate that contains `unsafe` code. Every
//! ioctl is generated with a `nix` macro inside the private `raw` module and
//! exposed through a safe wrapper that takes a borrowed file descriptor, so
//! callers can never pass a closed or dangling fd.
//!
//! Numbers and layouts come from `<linux/loop.h>` and `<linux/fs.h>`.

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

/// `lo_flags`: the device rejects writes.
///
/// `LOOP_SET_STATUS64` cannot set this flag: the kernel derives it from the
/// open mode of the backing fd at `LOOP_SET_FD` time. Only `LOOP_CONFIGURE`
/// honours it as an input.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// `lo_flags`: detach automatically on last close. We never set it (the
/// staged device must survive a driver restart), but the kernel sets it
/// itself when `LOOP_CLR_FD` is called on a device that is still open.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// `lo_flags`: scan the device for partitions.
pub const LO_FLAGS_PARTSCAN: u32 = 8;
/// `lo_flags`: use O_DIRECT on the backing file.
pub const LO_FLAGS_DIRECT_IO: u32 = 16;

/// Length of `lo_file_name` / `lo_crypt_name`.
pub const LO_NAME_SIZE: usize = 64;
/// Length of `lo_encrypt_key`.
pub const LO_KEY_SIZE: usize = 32;

/// Block major number of loop devices (`LOOP_MAJOR`).
pub const LOOP_MAJOR: u64 = 7;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct loop_info64 {
    /// Device number of the filesystem holding the backing file (read-only).
    pub lo_device: u64,
    /// Inode number of the backing file (read-only).
    pub lo_inode: u64,
    /// Device number of the loop device itself (read-only).
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    /// Bytes; 0 means "the whole backing file".
    pub lo_sizelimit: u64,
    /// Loop device index (read-only).
    pub lo_number: u32,
    /// Obsolete, ignored by the kernel.
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    /// Free-form name, by convention the backing file path (NUL padded).
    pub lo_file_name: [u8; LO_NAME_SIZE],
    pub lo_crypt_name: [u8; LO_NAME_SIZE],
    pub lo_encrypt_key: [u8; LO_KEY_SIZE],
    pub lo_init: [u64; 2],
}

impl Default for loop_info64 {
    fn default() -> Self {
        Self {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

impl loop_info64 {
    /// Store `name` in `lo_file_name`, truncated so a terminating NUL always
    /// fits (the kernel shows this field in `losetup` output).
    pub fn set_file_name(&mut self, name: &[u8]) {
        let len = name.len().min(LO_NAME_SIZE - 1);
        self.lo_file_name = [0; LO_NAME_SIZE];
        self.lo_file_name[..len].copy_from_slice(&name[..len]);
    }

    /// `lo_file_name` up to the first NUL.
    pub fn file_name(&self) -> &[u8] {
        let end = self.lo_file_name.iter().position(|&b| b == 0).unwrap_or(LO_NAME_SIZE);
        &self.lo_file_name[..end]
    }
}

/// `struct loop_config` from `<linux/loop.h>` (Linux 5.8+), the argument of
/// `LOOP_CONFIGURE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct loop_config {
    /// Backing file descriptor.
    pub fd: u32,
    /// Logical block size; 0 keeps the default (512).
    pub block_size: u32,
    pub info: loop_info64,
    pub __reserved: [u64; 8],
}

// ANCHOR: raw-ioctls
// The kernel ABI is fixed; a wrong layout would corrupt memory in the ioctl.
const _: () = assert!(std::mem::size_of::<loop_info64>() == 232);
const _: () = assert!(std::mem::size_of::<loop_config>() == 304);

mod raw {
    use super::{loop_config, loop_info64};

    // "Bad" variants because the loop ioctls predate the _IOR/_IOW encoding:
    // their numbers are plain `('L' << 8) | nr` and carry no size.
    nix::ioctl_none!(loop_ctl_get_free, 0x4C, 0x82);
    nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
    nix::ioctl_none!(loop_clr_fd, 0x4C, 0x01);
    nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, loop_info64);
    nix::ioctl_read_bad!(loop_get_status64, 0x4C05, loop_info64);
    nix::ioctl_none!(loop_set_capacity, 0x4C, 0x07);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, loop_config);
    // BLKGETSIZE64 is properly encoded: _IOR(0x12, 114, size_t).
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
}
// ANCHOR_END: raw-ioctls

/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: the index of a free loop
/// device, allocating a new one if none is free.
pub fn loop_ctl_get_free<F: AsFd>(control: F) -> Result<u32, Errno> {
    let fd = control.as_fd().as_raw_fd();
    // SAFETY: `fd` is borrowed from a live `AsFd` for the whole call; this
    // ioctl takes no argument.
    let n = unsafe { raw::loop_ctl_get_free(fd) }?;
    // The kernel never returns a negative index on success.
    u32::try_from(n).map_err(|_| Errno::EINVAL)
}

/// `LOOP_SET_FD`: bind `backing` to the loop device `device`. The device is
/// read-only if `backing` was opened read-only.
pub fn loop_set_fd<D: AsFd, B: AsFd>(device: D, backing: B) -> Result<(), Errno> {
    let fd = device.as_fd().as_raw_fd();
    let backing_fd = backing.as_fd().as_raw_fd();
    // SAFETY: both fds are borrowed from live `AsFd` values for the whole
    // call; the argument is passed by value, no memory is shared.
    unsafe { raw::loop_set_fd(fd, backing_fd) }.map(drop)
}

/// `LOOP_CLR_FD`: unbind the loop device. If the device is still open
/// elsewhere the kernel only marks it `LO_FLAGS_AUTOCLEAR` and the real
/// detach happens on last close.
pub fn loop_clr_fd<F: AsFd>(device: F) -> Result<(), Errno> {
    let fd = device.as_fd().as_raw_fd();
    // SAFETY: `fd` is borrowed from a live `AsFd`; no argument.
    unsafe { raw::loop_clr_fd(fd) }.map(drop)
}

/// `LOOP_SET_STATUS64`.
pub fn loop_set_status64<F: AsFd>(device: F, info: &loop_info64) -> Result<(), Errno> {
    let fd = device.as_fd().as_raw_fd();
    // SAFETY: `info` is a valid, initialised `#[repr(C)]` struct with the
    // kernel's layout (size asserted above); the kernel only reads it.
    unsafe { raw::loop_set_status64(fd, info) }.map(drop)
}

/// `LOOP_GET_STATUS64`. Fails with `ENXIO` when the device is not bound.
pub fn loop_get_status64<F: AsFd>(device: F) -> Result<loop_info64, Errno> {
    let fd = device.as_fd().as_raw_fd();
    let mut info = loop_info64::default();
    // SAFETY: `info` is a valid, writable `#[repr(C)]` struct with the
    // kernel's layout; it lives until the call returns.
    unsafe { raw::loop_get_status64(fd, &mut info) }?;
    Ok(info)
}

/// `LOOP_SET_CAPACITY`: re-read the backing file size after it changed.
pub fn loop_set_capacity<F: AsFd>(device: F) -> Result<(), Errno> {
    let fd = device.as_fd().as_raw_fd();
    // SAFETY: `fd` is borrowed from a live `AsFd`; no argument.
    unsafe { raw::loop_set_capacity(fd) }.map(drop)
}

// ANCHOR: loop-configure
/// `LOOP_CONFIGURE` (Linux 5.8+): bind `backing` and apply `info` in one
/// atomic call, so no one ever sees a bound device without its name and
/// flags. Unlike `LOOP_SET_STATUS64` it honours `LO_FLAGS_READ_ONLY`.
/// `block_size` 0 keeps the default (512). Older kernels answer `EINVAL`
/// or `ENOTTY`.
pub fn loop_configure<D: AsFd, B: AsFd>(
    device: D,
    backing: B,
    block_size: u32,
    info: &loop_info64,
) -> Result<(), Errno> {
    let fd = device.as_fd().as_raw_fd();
    let config = loop_config {
        // A live fd is never negative.
        fd: u32::try_from(backing.as_fd().as_raw_fd()).map_err(|_| Errno::EBADF)?,
        block_size,
        info: *info,
        __reserved: [0; 8],
    };
    // SAFETY: `config` is a valid, initialised `#[repr(C)]` struct with the
    // kernel's layout (size asserted above) and the kernel only reads it;
    // the backing fd it names is borrowed for the whole call.
    unsafe { raw::loop_configure(fd, &config) }.map(drop)
}
// ANCHOR_END: loop-configure

/// `BLKGETSIZE64`: size of a block device in bytes.
pub fn blkgetsize64<F: AsFd>(device: F) -> Result<u64, Errno> {
    let fd = device.as_fd().as_raw_fd();
    let mut size: u64 = 0;
    // SAFETY: `size` is a valid, writable u64 for the duration of the call,
    // which is exactly what BLKGETSIZE64 writes.
    unsafe { raw::blkgetsize64(fd, &mut size) }?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_is_truncated_and_nul_terminated() {
        let mut info = loop_info64::default();
        info.set_file_name(&[b'a'; 100]);
        assert_eq!(info.file_name().len(), LO_NAME_SIZE - 1);
        assert_eq!(info.lo_file_name[LO_NAME_SIZE - 1], 0);

        info.set_file_name(b"/var/lib/csi/vol.img");
        assert_eq!(info.file_name(), b"/var/lib/csi/vol.img");
    }

    #[test]
    fn loop_ioctl_numbers_match_the_kernel_headers() {
        // _IOR(0x12, 114, u64) = dir(2)<<30 | size(8)<<16 | 0x12<<8 | 114
        assert_eq!(nix::request_code_read!(0x12, 114, std::mem::size_of::<u64>()) as u64, 0x8008_1272);
        assert_eq!(nix::request_code_none!(0x4C, 0x82), 0x4C82);
        assert_eq!(nix::request_code_none!(0x4C, 0x07), 0x4C07);
    }
}
