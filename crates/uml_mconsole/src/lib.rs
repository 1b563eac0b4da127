//! A client for the mconsole socket of a running User-Mode Linux kernel.
//!
//! [`locate`] finds a machine's socket, [`process`] tells whether the process
//! an instance directory names is the machine, [`client`] sends one request
//! and joins its reply while the machine lives, [`session`] runs command lines
//! (local commands included) as the C `uml_mconsole` does, [`prompt`] reads
//! them, [`list`] and [`watch`] report the instances under the uml dirs, and
//! [`app`] ties it together for the command line.

pub mod app;
pub mod cli;
pub mod client;
pub mod command;
pub mod list;
pub mod locate;
pub mod output;
pub mod process;
pub mod prompt;
pub mod session;
pub mod watch;
