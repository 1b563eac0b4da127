//! uml_lab: one TOML file describes a lab of User-Mode Linux machines and
//! the networks between them; one command brings it up, shows it,
//! supervises it and takes it down, driving this project's tools.
//!
//! [`lab`] reads and checks the file, [`rundir`] keeps the state that outlives
//! the manager, [`launch`] starts switches and kernels, [`supervise`] watches
//! and restarts them, [`commands`] and [`status`] are the command line's verbs, [`app`] the command line,
//! [`switch_mgmt`] speaks to the switches' management sockets (counters, events, live captures).

pub mod app;
pub mod commands;
pub mod image;
pub mod lab;
pub mod launch;
pub mod mconsole;
pub mod rundir;
pub mod status;
pub mod supervise;
pub mod switch_mgmt;
pub mod terminal;
