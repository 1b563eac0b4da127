//! The host system interfaces the UML utilities share.
//!
//! Every `unsafe` block of the workspace lives in this crate, each with the
//! reason it is sound; the tools above it are safe Rust. What is here:
//!
//! - [`tun`]: the TUN/TAP ioctls (create, persist, owner, group, MTU);
//! - [`devices`]: TUN/TAP devices as sysfs shows them;
//! - [`socket_file`]: binding a unix socket at a path, replacing only a stale
//!   socket, and removing the file at exit only while it is still ours;
//! - [`pid_file`]: a daemon's pid file, published atomically and removed at
//!   exit only while it is still ours;
//! - [`publish`]: writing a new file under a temporary name and renaming it
//!   into place durably;
//! - [`file_lock`]: whole-file locks that conflict with a running UML's;
//! - [`fd`]: taking ownership of descriptors the kernel hands over (accepted
//!   connections, `SCM_RIGHTS`);
//! - [`tty`]: giving up a controlling terminal (`TIOCNOTTY`);
//! - [`datagram`]: many unix datagrams and their senders' names per
//!   `recvmmsg`, each name the sender's own;
//! - [`process`]: the members of a process group, as `/proc` shows them, and
//!   starting a program without address randomization (`setarch -R`).

pub mod datagram;
pub mod devices;
pub mod fd;
pub mod file_lock;
#[cfg(feature = "publish")]
pub mod pid_file;
pub mod process;
#[cfg(feature = "publish")]
pub mod publish;
pub mod socket_file;
pub mod tty;
pub mod tun;
