//! The argument vector the kernel passes (`uml_net 4 tuntap up GATE`,
//! `uml_net 4 add DEV ADDR NETMASK`, ...) turned into a checked request.

use std::ffi::OsString;
use std::net::Ipv4Addr;

/// The newest helper protocol: the version the kernel puts in argv[1].
pub const PROTOCOL_VERSION: u64 = 4;

/// How the kernel expects this request's answer on fd 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One datagram: interface name, text, and the tap's fd (`tuntap up`).
    TapDatagram,
    /// A host-endian length, then the text (`add`, `del`, `slip`).
    Length,
    /// A status byte, then a length-framed text (`ethertap`).
    StatusThenLength,
}

/// Whether a route is being set up or taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `add`: host route, proxy ARP.
    Add,
    /// `del`: undo `add`.
    Del,
}

impl Change {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Del => "del",
        }
    }
}

/// A request the helper serves or answers with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `tuntap up [GATE]`: a new tap, with GATE as its host address when given.
    TapUp {
        /// The host end's address.
        gate: Option<Ipv4Addr>,
    },
    /// `add|del DEV ADDR [NETMASK]`: the host route and proxy ARP for a guest address.
    Route {
        /// Add or delete.
        change: Change,
        /// The interface (a tap the caller owns).
        dev: String,
        /// The guest's address.
        addr: Ipv4Addr,
        /// The guest's netmask, which picks the host interfaces that publish it.
        netmask: Option<Ipv4Addr>,
    },
    /// A transport the host kernel no longer has (`ethertap`, `slip`).
    Obsolete {
        /// Which one.
        transport: &'static str,
        /// How its answer is framed.
        framing: Framing,
    },
}

/// Why the argument vector is not a request. Each variant knows where its
/// message goes, so the kernel (or a person at a terminal) sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Fewer than two words: someone ran the helper by hand (stderr).
    #[error(
        "uml_net : bad argument list - if you're running uml_net by\nhand, don't bother.  \
         uml_net is run automatically by UML when\nnecessary."
    )]
    BadArgumentList,
    /// A version newer than ours (stderr).
    #[error("Version mismatch - requested version {0}, uml_net supports up to version 4")]
    VersionMismatch(u64),
    /// An older version, which no transport is served in any more (stdout).
    #[error("No version #{version} handler for '{transport}'")]
    NoHandler {
        /// The requested version.
        version: u64,
        /// The transport.
        transport: String,
    },
    /// A transport nobody ever had (stdout).
    #[error("Unknown transport : '{0}'")]
    UnknownTransport(String),
    /// A known subcommand with arguments that do not check out (answered in its framing).
    #[error("uml_net {subcommand}: {reason}")]
    Invalid {
        /// How the kernel expects the answer.
        framing: Framing,
        /// `tuntap up`, `add`, ...
        subcommand: String,
        /// What is wrong, naming the argument.
        reason: String,
    },
}

impl RequestError {
    /// Whether the C helper printed this on stderr (else stdout).
    pub fn goes_to_stderr(&self) -> bool {
        matches!(
            self,
            RequestError::BadArgumentList | RequestError::VersionMismatch(_)
        )
    }
}

fn invalid(framing: Framing, subcommand: &str, reason: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        framing,
        subcommand: subcommand.to_owned(),
        reason: reason.into(),
    }
}

/// A version word read as C's `strtoul` does: leading digits, or none (version 0).
fn leading_number(word: &str) -> Option<u64> {
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    // Overflow saturates, as strtoul does, and is then a version mismatch.
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// Parses the words after the program name.
pub fn parse(words: &[OsString]) -> Result<Request, RequestError> {
    let words: Vec<String> = words
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    if words.len() < 2 {
        return Err(RequestError::BadArgumentList);
    }
    // A non-numeric first word is a version-0 request naming its transport.
    let (version, rest) = match leading_number(&words[0]) {
        Some(version) => (version, &words[1..]),
        None => (0, &words[..]),
    };
    if version > PROTOCOL_VERSION {
        return Err(RequestError::VersionMismatch(version));
    }
    let Some((transport, args)) = rest.split_first() else {
        return Err(RequestError::BadArgumentList);
    };
    let known = ["tuntap", "add", "del", "ethertap", "slip"];
    if !known.contains(&transport.as_str()) {
        return Err(RequestError::UnknownTransport(transport.clone()));
    }
    if version != PROTOCOL_VERSION {
        return Err(RequestError::NoHandler {
            version,
            transport: transport.clone(),
        });
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match transport.as_str() {
        "tuntap" => tuntap(&args),
        "add" => route(Change::Add, &args),
        "del" => route(Change::Del, &args),
        "ethertap" => Ok(Request::Obsolete {
            transport: "ethertap",
            framing: Framing::StatusThenLength,
        }),
        _ => Ok(Request::Obsolete {
            transport: "slip",
            framing: Framing::Length,
        }),
    }
}

fn tuntap(args: &[&str]) -> Result<Request, RequestError> {
    let framing = Framing::TapDatagram;
    match args {
        ["up"] => Ok(Request::TapUp { gate: None }),
        ["up", gate] => Ok(Request::TapUp {
            gate: Some(
                host_address(gate)
                    .map_err(|why| invalid(framing, "tuntap up", format!("GATE {why}")))?,
            ),
        }),
        ["up", _, extra, ..] => Err(invalid(
            framing,
            "tuntap up",
            format!("unexpected argument '{extra}' after GATE"),
        )),
        [] => Err(invalid(framing, "tuntap", "missing 'up'")),
        [other, ..] => Err(invalid(
            framing,
            "tuntap",
            format!("unknown subcommand '{other}' (only 'up' exists)"),
        )),
    }
}

fn route(change: Change, args: &[&str]) -> Result<Request, RequestError> {
    let framing = Framing::Length;
    let name = change.name();
    let fail = |why: String| invalid(framing, name, why);
    let (dev, addr, netmask) = match args {
        [dev, addr] => (*dev, *addr, None),
        [dev, addr, netmask] => (*dev, *addr, Some(*netmask)),
        [_, _, _, extra, ..] => {
            return Err(fail(format!("unexpected argument '{extra}' after NETMASK")));
        }
        _ => {
            return Err(fail(
                "usage: uml_net 4 add|del DEV ADDR [NETMASK]".to_owned(),
            ));
        }
    };
    if dev.is_empty() || dev.len() > 15 || !dev.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(fail(format!(
            "device '{dev}' is not 1 to 15 alphanumeric characters"
        )));
    }
    let addr = host_address(addr).map_err(|why| fail(format!("ADDR {why}")))?;
    let netmask = netmask
        .map(|text| {
            let mask = dotted_quad(text).ok_or_else(|| {
                fail(format!(
                    "NETMASK '{text}' is not a dotted quad such as 255.255.255.0"
                ))
            })?;
            let bits = u32::from(mask);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(fail(format!("NETMASK '{text}' is not a contiguous mask")));
            }
            Ok(mask)
        })
        .transpose()?;
    Ok(Request::Route {
        change,
        dev: dev.to_owned(),
        addr,
        netmask,
    })
}

/// Four decimal octets without leading zeros, exactly as the kernel prints them
/// (`inet_aton` would read `010` as octal and `10.1` as `10.0.0.1`; we accept neither).
pub fn dotted_quad(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty()
            || part.len() > 3
            || (part.len() > 1 && part.starts_with('0'))
            || !part.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// An address a host interface or host route may use: no loopback, multicast,
/// broadcast, "this network" or reserved (class E) address.
fn host_address(text: &str) -> Result<Ipv4Addr, String> {
    let addr = dotted_quad(text)
        .ok_or_else(|| format!("'{text}' is not a dotted quad such as 10.0.0.1"))?;
    let first = addr.octets()[0];
    let kind = if first == 0 {
        Some("a \"this network\" (0.0.0.0/8)")
    } else if addr.is_loopback() {
        Some("a loopback")
    } else if addr.is_multicast() {
        Some("a multicast")
    } else if first >= 240 {
        Some("a reserved or broadcast")
    } else {
        None
    };
    match kind {
        Some(kind) => Err(format!("'{text}' is {kind} address")),
        None => Ok(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn parsed(list: &[&str]) -> Result<Request, RequestError> {
        parse(&words(list))
    }

    fn reason(list: &[&str]) -> String {
        match parsed(list) {
            Err(RequestError::Invalid { reason, .. }) => reason,
            other => panic!("{list:?} gave {other:?}"),
        }
    }

    #[test]
    fn the_kernels_requests() {
        assert_eq!(
            parsed(&["4", "tuntap", "up", "10.99.7.1"]),
            Ok(Request::TapUp {
                gate: Some(Ipv4Addr::new(10, 99, 7, 1))
            })
        );
        assert_eq!(
            parsed(&["4", "tuntap", "up"]),
            Ok(Request::TapUp { gate: None })
        );
        assert_eq!(
            parsed(&["4", "add", "tap0", "10.99.7.2", "255.255.255.0"]),
            Ok(Request::Route {
                change: Change::Add,
                dev: "tap0".into(),
                addr: Ipv4Addr::new(10, 99, 7, 2),
                netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            })
        );
        assert!(matches!(
            parsed(&["4", "del", "tap0", "10.99.7.2"]),
            Ok(Request::Route {
                change: Change::Del,
                netmask: None,
                ..
            })
        ));
        assert!(matches!(
            parsed(&["4", "slip", "up", "10.0.0.1"]),
            Ok(Request::Obsolete {
                transport: "slip",
                framing: Framing::Length
            })
        ));
    }

    #[test]
    fn versions_and_transports_as_the_c_helper_reports_them() {
        assert_eq!(parsed(&["4"]), Err(RequestError::BadArgumentList));
        assert_eq!(parsed(&[]), Err(RequestError::BadArgumentList));
        assert_eq!(
            parsed(&["5", "tuntap", "up"]),
            Err(RequestError::VersionMismatch(5))
        );
        assert_eq!(
            parsed(&["99999999999999999999999", "tuntap"]),
            Err(RequestError::VersionMismatch(u64::MAX))
        );
        assert_eq!(
            parsed(&["4", "x"]),
            Err(RequestError::UnknownTransport("x".into()))
        );
        assert_eq!(
            parsed(&["tuntap", "up"]).map_err(|e| e.to_string()),
            Err("No version #0 handler for 'tuntap'".into())
        );
        assert_eq!(
            RequestError::UnknownTransport("x".into()).to_string(),
            "Unknown transport : 'x'"
        );
    }

    #[test]
    fn addresses_are_strict_dotted_quads_a_host_may_use() {
        assert_eq!(dotted_quad("10.99.0.1"), Some(Ipv4Addr::new(10, 99, 0, 1)));
        for bad in [
            "10.1",
            "010.0.0.1",
            "10.0.0.256",
            "10.0.0.1.",
            "1.2.3.4.5",
            "a.b.c.d",
            " 1.2.3.4",
            "1.2.3.+4",
        ] {
            assert_eq!(dotted_quad(bad), None, "{bad}");
        }
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
        ] {
            assert!(
                reason(&["4", "tuntap", "up", bad]).starts_with("GATE"),
                "{bad}"
            );
        }
        assert!(reason(&["4", "add", "tap0", "10.0.0.999", "255.0.0.0"]).starts_with("ADDR"));
    }

    #[test]
    fn devices_masks_and_stray_words_are_refused() {
        assert!(reason(&["4", "add", "tap0;x", "10.0.0.2"]).contains("alphanumeric"));
        assert!(reason(&["4", "add", "../../x", "10.0.0.2"]).contains("alphanumeric"));
        assert!(reason(&["4", "add", "abcdefghijklmnop", "10.0.0.2"]).contains("alphanumeric"));
        assert!(reason(&["4", "add", "tap0", "10.0.0.2", "255.0.255.0"]).contains("contiguous"));
        assert!(reason(&["4", "add", "tap0", "10.0.0.2", "255.0.0"]).contains("NETMASK"));
        assert!(reason(&["4", "add", "tap0", "10.0.0.2", "255.0.0.0", "x"]).contains("'x'"));
        assert!(reason(&["4", "add", "tap0"]).contains("usage"));
        assert!(reason(&["4", "tuntap", "up", "10.0.0.1", "x"]).contains("'x'"));
        assert!(reason(&["4", "tuntap", "down"]).contains("'down'"));
    }
}
