//! `uml_net`: the privileged helper a UML kernel runs for `ethN=tuntap,,,GATE`.
//!
//! The kernel runs `uml_net 4 tuntap up GATE` to get a configured tap's fd, and
//! `uml_net 4 add|del DEV ADDR NETMASK` whenever the guest's addresses change.
//! This is the suite's security boundary: it keeps only CAP_NET_ADMIN from the
//! moment it starts, does only what the administrator's policy allows the
//! calling user (see [`policy`]) or, without a policy, what the C package let
//! members of its group do, checks every argument before changing
//! anything, talks to the kernel through netlink, and gives up every privilege
//! before it writes its answer.

pub mod answer;
pub mod cli;
pub mod error;
pub mod policy;
pub mod privilege;
pub mod request;
pub mod route;
pub mod rtnl;
pub mod sysctl;
pub mod tap;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use crate::answer::{Answer, Report};
use crate::error::NetError;
use crate::policy::{Caller, POLICY_PATH, Permissions};
use crate::privilege::PrivilegeError;
use crate::request::{Framing, Request, RequestError};
use crate::tap::Tap;

/// The helper right after start-up: who called, and whether the capability
/// sets could be narrowed to CAP_NET_ADMIN.
#[derive(Debug)]
pub struct Start {
    caller: Result<Caller, PrivilegeError>,
    net_admin: Result<bool, PrivilegeError>,
    groups: Vec<u32>,
}

impl Start {
    /// Narrows the privileges; call it before anything else, argument parsing included.
    pub fn now() -> Self {
        let caller = privilege::caller();
        let net_admin = privilege::keep_only_net_admin();
        let groups = privilege::install_groups();
        Self {
            caller,
            net_admin,
            groups,
        }
    }
}

/// What to tell the kernel.
enum Outcome {
    /// A tap made and configured.
    Tap { tap: Tap, report: Report },
    /// A text answer; `ok` picks the exit status.
    Text {
        framing: Framing,
        report: Report,
        ok: bool,
    },
}

/// Serves the request in `words` (the arguments after the program name) and
/// returns the exit status.
pub fn run(start: Start, words: &[OsString]) -> u8 {
    let caller = match start.caller {
        Ok(caller) => caller,
        Err(e) => {
            // Without the real ids the helper cannot give up root: say nothing on fd 1.
            eprintln!("uml_net: {e}");
            return 1;
        }
    };
    let outcome = match request::parse(words) {
        Ok(request) => serve(request, &caller, start.net_admin, &start.groups),
        Err(RequestError::Invalid {
            framing,
            subcommand,
            reason,
        }) => {
            let mut report = Report::default();
            report.note(&format!("uml_net {subcommand}: {reason}"));
            Outcome::Text {
                framing,
                report,
                ok: false,
            }
        }
        Err(plain) => return refuse_plainly(&plain, &caller),
    };
    finish(outcome, &caller)
}

/// The C helper's unframed complaints, on the stream it used.
fn refuse_plainly(error: &RequestError, caller: &Caller) -> u8 {
    if let Err(e) = privilege::drop_all(caller) {
        eprintln!("uml_net: {e}");
        return 1;
    }
    if error.goes_to_stderr() {
        eprintln!("{error}");
    } else {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{error}");
        let _ = out.flush();
    }
    1
}

fn serve(
    request: Request,
    caller: &Caller,
    net_admin: Result<bool, PrivilegeError>,
    groups: &[u32],
) -> Outcome {
    let mut report = Report::default();
    // Checked after the policy, so that a denied request says so.
    let net_admin = match net_admin {
        Ok(true) => Ok(()),
        Ok(false) => Err(NetError::NoNetAdmin),
        Err(e) => Err(NetError::Privilege(e)),
    };
    let (framing, result) = match request {
        Request::Obsolete { transport, framing } => {
            (framing, Err(NetError::Unsupported(transport)))
        }
        Request::TapUp { gate } => {
            let perms = Permissions::for_caller(caller.clone(), Path::new(POLICY_PATH), groups);
            let made = tap::authorize(gate, &perms)
                .and(net_admin)
                .and_then(|()| tap::up(gate, &perms, &mut report));
            match made {
                Ok(tap) => return Outcome::Tap { tap, report },
                Err(e) => (Framing::TapDatagram, Err(e)),
            }
        }
        // NETMASK is checked but not needed: where to publish the address
        // follows from the host's own routes.
        Request::Route {
            change,
            dev,
            addr,
            netmask: _,
        } => {
            let perms = Permissions::for_caller(caller.clone(), Path::new(POLICY_PATH), groups);
            let result = route::authorize(change, &dev, addr, &perms)
                .and_then(|checked| net_admin.map(|()| checked))
                .and_then(|checked| route::apply(&checked, &perms, &mut report));
            (Framing::Length, result)
        }
    };
    let ok = match result {
        Ok(()) => true,
        Err(e) => {
            report.note(&format!("uml_net: {e}"));
            false
        }
    };
    Outcome::Text {
        framing,
        report,
        ok,
    }
}

/// Gives up every privilege, then answers on fd 1.
fn finish(outcome: Outcome, caller: &Caller) -> u8 {
    if let Err(e) = privilege::drop_all(caller) {
        eprintln!("uml_net: {e}; not answering with privileges held");
        return 1;
    }
    let stdout = std::io::stdout();
    let answer = Answer::new(stdout.as_fd());
    let (sent, ok) = match &outcome {
        Outcome::Tap { tap, report } => {
            (answer.tap(&tap.name, report.text(), tap.file.as_fd()), true)
        }
        Outcome::Text {
            framing,
            report,
            ok,
        } => {
            let sent = if *ok {
                answer.framed(None, report.text())
            } else {
                answer.failure(*framing, report.text())
            };
            (sent, *ok)
        }
    };
    match sent {
        Ok(()) => u8::from(!ok),
        Err(e) => {
            eprintln!("uml_net: cannot answer the kernel on fd 1: {e}");
            1
        }
    }
}
