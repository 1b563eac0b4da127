//! `--endpoint`: more control sockets, BESS listeners or tap devices, each
//! with the VLAN and link emulation every port made there gets, so that a
//! guest's VLAN and link are chosen by where it plugs in.
//!
//! `KIND:WHERE[,vlan=N|,trunk=A:B-C[,native=N]][,delay=..,loss=..,...,dir=in|out|both]`

use std::path::PathBuf;
use std::str::FromStr;

use crate::link_emulation::{Direction, EmulationError, LinkEmulation};
use crate::vlan::{VlanConfig, VlanError, parse_vid};

/// Why an `--endpoint` is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The part before the first comma is not `unix:PATH`, `bess:PATH` or `tap:DEV`.
    #[error(
        "--endpoint: '{0}' (expected unix:PATH, bess:PATH or tap:DEV, then ,key=value options)"
    )]
    Kind(String),
    /// An option that is not one of ours.
    #[error("--endpoint: unknown option '{0}'")]
    Option(String),
    /// A VLAN setting that does not parse.
    #[error("--endpoint: {0}")]
    Vlan(#[from] VlanError),
    /// An emulation setting that does not parse.
    #[error("--endpoint: {0}")]
    Emulation(#[from] EmulationError),
}

/// Where guests plug in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointKind {
    /// A control socket for daemon-transport guests.
    Unix(PathBuf),
    /// A BESS listener.
    Bess(PathBuf),
    /// A tap device, one port.
    Tap(String),
}

/// What every port made at an endpoint starts with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PortTemplate {
    /// Its VLAN setting (none: transparent, as the switch always was).
    pub vlan: Option<VlanConfig>,
    /// Its link emulation, if any, and in which direction.
    pub emulation: Option<(Direction, LinkEmulation)>,
}

impl PortTemplate {
    /// Whether the template changes nothing.
    pub fn is_plain(&self) -> bool {
        self.vlan.is_none() && self.emulation.is_none()
    }
}

/// One `--endpoint`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    /// Where.
    pub kind: EndpointKind,
    /// With what.
    pub template: PortTemplate,
}

impl FromStr for EndpointSpec {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let head = parts.next().unwrap_or_default();
        let kind = match head.split_once(':') {
            Some(("unix", p)) if !p.is_empty() => EndpointKind::Unix(PathBuf::from(p)),
            Some(("bess", p)) if !p.is_empty() => EndpointKind::Bess(PathBuf::from(p)),
            Some(("tap", d)) if !d.is_empty() => EndpointKind::Tap(d.to_owned()),
            _ => return Err(EndpointError::Kind(head.to_owned())),
        };
        let mut template = PortTemplate::default();
        let mut emulation = LinkEmulation::default();
        let mut emulated = false;
        let mut direction = Direction::Out;
        let mut trunk: Option<&str> = None;
        let mut native = None;
        for item in parts.filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| EndpointError::Option(item.to_owned()))?;
            match key {
                "vlan" => template.vlan = Some(VlanConfig::Access(parse_vid(value)?)),
                "trunk" => trunk = Some(value),
                "native" => native = Some(parse_vid(value)?),
                "dir" => direction = value.parse()?,
                _ => {
                    if !emulation.set(key, value)? {
                        return Err(EndpointError::Option(item.to_owned()));
                    }
                    emulated = true;
                }
            }
        }
        if let Some(list) = trunk {
            template.vlan = Some(VlanConfig::trunk(list.split(':'), native)?);
        }
        if emulated && !emulation.is_noop() {
            template.emulation = Some((direction, emulation));
        }
        Ok(Self { kind, template })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_endpoints() {
        let e: EndpointSpec = "unix:/tmp/v10.ctl,vlan=10".parse().unwrap();
        assert_eq!(e.kind, EndpointKind::Unix("/tmp/v10.ctl".into()));
        assert_eq!(e.template.vlan, Some(VlanConfig::Access(10)));
        assert!(e.template.emulation.is_none());
        let e: EndpointSpec =
            "bess:/tmp/t.bess,trunk=10:20-21,native=20,delay=100ms,loss=1%,dir=both"
                .parse()
                .unwrap();
        assert_eq!(
            e.template.vlan,
            Some("trunk:10,20-21,native=20".parse().unwrap())
        );
        let (dir, emu) = e.template.emulation.unwrap();
        assert_eq!(
            (dir, emu.delay),
            (Direction::Both, Duration::from_millis(100))
        );
        let e: EndpointSpec = "tap:tap0".parse().unwrap();
        assert!(e.template.is_plain());
        for bad in [
            "udp:x",
            "unix:",
            "unix:/x,vlan=5000",
            "unix:/x,colour=red",
            "unix:/x,vlan",
        ] {
            assert!(bad.parse::<EndpointSpec>().is_err(), "{bad}");
        }
    }
}
