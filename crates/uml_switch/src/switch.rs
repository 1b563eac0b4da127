//! The switch's state and its start-up: every socket bound, the start-up
//! lines printed. The control plane is in [`crate::control`], the event loop
//! and the data path in [`crate::event_loop`].

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{MultiHeaders, SockType, UnixAddr};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use uml_host::pid_file::{PidFile, PidFileError, PreparedPidFile};
use uml_host::socket_file::{BoundPath, SocketFile, SocketFileError};
use uml_host::tun::{TunError, open_tap};

use crate::backlog::{Budget, SEND_BATCH, TOTAL_BACKLOG_BYTES};
use crate::batch::{Outgoing, RxBatch};
use crate::control::{AcceptBackoff, CLIENT_LINES_PER_SECOND, PendingRequests};
use crate::endpoint::EndpointSpec;
use crate::event_loop::{AGE_EVERY, LEARN_LINES_PER_SECOND, Token};
use crate::fabric::Fabric;
use crate::forward::MAX_FRAME;
use crate::learning::MacTable;
use crate::log::{LineLimit, log_line};
use crate::mgmt::{Managed, ManagedConfig, MgmtListener};
use crate::port_socket::Namer;
use crate::ports::{Link, PortId, PortTable};
use crate::quota::Quota;
use crate::vxlan::VxlanConfig;

/// What the command line chose.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name the program was started as, for the start-up lines.
    pub program: String,
    /// The control socket path.
    pub control: PathBuf,
    /// `-compat-v0`: accept v0 requests, and frames travel through this data
    /// socket file; without it the data socket has an abstract name.
    pub compat_v0_data: Option<PathBuf>,
    /// Flood every frame.
    pub hub: bool,
    /// A tap device to attach as a port.
    pub tap: Option<String>,
    /// Where to listen for BESS (SOCK_SEQPACKET) connections.
    pub bess: Option<PathBuf>,
    /// Detach into the background once the sockets are bound.
    pub daemon: bool,
    /// Where to write our pid (after detaching), removed at exit.
    pub pidfile: Option<PathBuf>,
    /// How long a MAC stays learned after its last frame.
    pub max_age: Duration,
    /// Ports one user other than root and the switch's own may hold (0: no limit).
    pub max_ports_per_user: usize,
    /// The most addresses the learning table holds (`--max-macs`).
    pub max_macs: usize,
    /// More listeners (or taps), each with the VLAN and emulation of its ports.
    pub endpoints: Vec<EndpointSpec>,
    /// VXLAN uplinks.
    pub vxlan: Vec<VxlanConfig>,
    /// The management socket and captures (issue 13).
    pub managed: ManagedConfig,
}

/// Why the switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// A socket path is taken or unusable.
    #[error(transparent)]
    SocketFile(#[from] SocketFileError),
    /// The pid file cannot be written.
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    /// The tap device could not be attached.
    #[error("tap device '{name}': {source}")]
    Tap {
        /// The device name.
        name: String,
        /// The failure.
        source: TunError,
    },
    /// The capture given on the command line cannot start.
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    /// The sockets passed by socket activation cannot be used.
    #[error("socket activation: {0}")]
    Activation(#[from] crate::activation::ActivationError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The failure.
        source: io::Error,
    },
}

pub(crate) fn sys(what: &'static str) -> impl Fn(nix::Error) -> SwitchError {
    move |e| SwitchError::Sys {
        what,
        source: e.into(),
    }
}

/// The shared datagram socket of `-compat-v0` mode, where v0 clients send
/// their frames (every other daemon port has a data socket of its own).
pub(crate) struct DataSocket {
    pub(crate) fd: OwnedFd,
    /// The socket file, removed at exit.
    _file: SocketFile,
}

/// What sending frames to ports needs between calls.
pub(crate) struct Sending {
    /// `sendmmsg`'s headers, allocated once.
    pub(crate) headers: MultiHeaders<UnixAddr>,
    /// Ports whose backlog is waiting for epoll to report room.
    pub(crate) arm: Vec<PortId>,
    /// Ports whose backlog holds other ports back, watched for stalling.
    pub(crate) holders: Vec<PortId>,
    /// Ports whose backlog grew past the hold mark since the frames' source
    /// was last told.
    pub(crate) backed_up: Vec<PortId>,
    /// The bytes all backlogs hold.
    pub(crate) budget: Budget,
}

/// A running switch.
pub struct Switch {
    pub(crate) cfg: Config,
    pub(crate) epoll: Epoll,
    pub(crate) signals: SignalFd,
    /// Fires every [`AGE_EVERY`](crate::event_loop::AGE_EVERY): the loop's
    /// periodic work needs no timeout on every wait, and so no kernel timer
    /// armed and cancelled around every sleep.
    pub(crate) tick: TimerFd,
    pub(crate) control: BoundPath,
    /// The shared `-compat-v0` data socket.
    pub(crate) data: Option<DataSocket>,
    /// Names the daemon ports' own data sockets.
    pub(crate) namer: Namer,
    /// How many ports and waiting connections each user may hold.
    pub(crate) quota: Quota,
    pub(crate) sending: Sending,
    pub(crate) bess: Option<BoundPath>,
    pub(crate) pending: PendingRequests,
    pub(crate) backoff: AcceptBackoff,
    /// The kernel's not telling abstract sockets' owners was logged.
    pub(crate) owner_unknown_logged: bool,
    pub(crate) ports: PortTable,
    pub(crate) table: MacTable,
    /// One frame's buffer for BESS and tap reads, lent out while it is forwarded.
    pub(crate) buf: Vec<u8>,
    pub(crate) rx: RxBatch,
    pub(crate) tx: Vec<Outgoing>,
    pub(crate) targets: Vec<PortId>,
    pub(crate) now: Instant,
    /// Learned and moved addresses' lines (see [`Switch::log_learned`]).
    pub(crate) learn_lines: LineLimit,
    /// The full table's line.
    pub(crate) full_lines: LineLimit,
    /// Lines about limited users' connections (see [`Switch::log_client`]).
    pub(crate) client_lines: LineLimit,
    /// Loop turns so far: tells a port read turn after turn (it has frames
    /// queued) from one whose frames come one at a time.
    pub(crate) turn: u64,
    /// VLANs, emulated links, endpoints and uplinks.
    pub(crate) fabric: Fabric,
    /// A signal that came before the event loop: it ends the switch at once.
    pub(crate) stop_before_loop: Option<i32>,
    /// Management socket, captures, counters' history (issue 13).
    pub(crate) managed: Managed,
    /// Removed when the switch is dropped, after the socket files.
    _pidfile: Option<PidFile>,
}

impl Switch {
    /// Binds every socket and prints the start-up lines; the switch then runs with [`Switch::run`].
    pub fn start(mut cfg: Config) -> Result<Self, SwitchError> {
        if cfg.managed.pcap.as_deref() == Some(std::path::Path::new("-")) {
            // Standard output carries the capture: not a log line may go there.
            crate::log::to_stderr();
        }
        let mut signals_set = SigSet::empty();
        signals_set.add(Signal::SIGINT);
        signals_set.add(Signal::SIGTERM);
        signals_set.add(Signal::SIGHUP);
        // Taken as events, so that our socket files are removed on the way out.
        signals_set
            .thread_block()
            .map_err(sys("blocking SIGINT, SIGTERM and SIGHUP"))?;
        let signals =
            SignalFd::with_flags(&signals_set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                .map_err(sys("creating a signalfd"))?;
        let passed = crate::activation::take_passed()?;
        let control = match passed.control {
            Some(listener) => {
                cfg.control = listener.path.unwrap_or(cfg.control);
                BoundPath::inherited(listener.fd, &cfg.control)
            }
            None => BoundPath::bind(&cfg.control, SockType::Stream)?,
        };
        let data = match &cfg.compat_v0_data {
            Some(path) => {
                let (fd, file) = BoundPath::bind(path, SockType::Datagram)?.into_parts();
                Some(DataSocket { fd, _file: file })
            }
            None => None,
        };
        let bess = match passed.bess {
            Some(listener) => {
                let path = listener.path.or(cfg.bess.clone()).unwrap_or_default();
                Some(BoundPath::inherited(listener.fd, &path))
            }
            None => cfg
                .bess
                .as_deref()
                .map(|path| BoundPath::bind(path, SockType::SeqPacket))
                .transpose()?,
        };
        // managed switch (issue 13): the management socket, bound like the others.
        let mgmt = match passed.mgmt {
            Some(listener) => {
                cfg.managed.mgmt = listener.path.or(cfg.managed.mgmt);
                Some(MgmtListener::from_listening(listener.fd))
            }
            None => cfg
                .managed
                .mgmt
                .as_deref()
                .map(MgmtListener::bind)
                .transpose()?,
        };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(sys("creating an epoll instance"))?;
        let watch = |fd: BorrowedFd<'_>, token: Token| {
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token.into()))
                .map_err(sys("watching a socket"))
        };
        watch(control.fd.as_fd(), Token::Control)?;
        if let Some(data) = &data {
            watch(data.fd.as_fd(), Token::Data)?;
        }
        if let Some(bess) = &bess {
            watch(bess.fd.as_fd(), Token::Bess)?;
        }
        if let Some(mgmt) = &mgmt {
            watch(mgmt.fd.as_fd(), Token::Mgmt)?;
        }
        let tick = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(sys("creating a timerfd"))?;
        tick.set(
            Expiration::Interval(TimeSpec::from_duration(AGE_EVERY)),
            TimerSetTimeFlags::empty(),
        )
        .map_err(sys("setting a timerfd"))?;
        watch(tick.as_fd(), Token::Tick)?;
        let stdin = io::stdin();
        if stdin.is_terminal() {
            watch(stdin.as_fd(), Token::Stdin)?;
        }
        let quota = Quota::new(
            cfg.max_ports_per_user,
            nix::unistd::geteuid().as_raw(),
            descriptor_limit(),
        );
        let mut switch = Self {
            table: MacTable::new(cfg.max_age, cfg.max_macs),
            cfg,
            epoll,
            signals,
            tick,
            control,
            data,
            namer: Namer::default(),
            quota,
            sending: Sending {
                headers: MultiHeaders::preallocate(SEND_BATCH, None),
                arm: Vec::new(),
                holders: Vec::new(),
                backed_up: Vec::new(),
                budget: Budget::new(TOTAL_BACKLOG_BYTES),
            },
            bess,
            pending: PendingRequests::default(),
            backoff: AcceptBackoff::default(),
            owner_unknown_logged: false,
            ports: PortTable::new(),
            buf: vec![0; MAX_FRAME + 1],
            rx: RxBatch::new(),
            tx: Vec::new(),
            targets: Vec::new(),
            now: Instant::now(),
            learn_lines: LineLimit::new(LEARN_LINES_PER_SECOND),
            full_lines: LineLimit::new(1),
            client_lines: LineLimit::new(CLIENT_LINES_PER_SECOND),
            turn: 0,
            fabric: Fabric::new(),
            stop_before_loop: None,
            managed: Managed::new(mgmt),
            _pidfile: None,
        };
        switch.start_pcap()?;
        switch.announce();
        if let Some(name) = switch.cfg.tap.clone() {
            let file = open_tap(&name).map_err(|source| SwitchError::Tap { name, source })?;
            let id = switch.add_port(Link::Tap(file));
            log_line(&format!("Attached tap device as port {id}"));
        }
        let (endpoints, uplinks) = (switch.cfg.endpoints.clone(), switch.cfg.vxlan.clone());
        switch.start_fabric(&endpoints, &uplinks)?;
        let pidfile = switch
            .cfg
            .pidfile
            .as_deref()
            .map(PreparedPidFile::prepare)
            .transpose()?;
        // Signals blocked since before the first bind wait here; one sent
        // before the fork would be lost with the parent (a child starts with
        // none pending), so it ends the switch now.
        if let Ok(Some(info)) = switch.signals.read_signal() {
            switch.stop_before_loop = i32::try_from(info.ssi_signo).ok();
            return Ok(switch);
        }
        if switch.cfg.daemon {
            nix::unistd::daemon(false, true).map_err(sys("detaching into the background"))?;
        }
        switch._pidfile = pidfile.map(PreparedPidFile::publish).transpose()?;
        // Watched only now: epoll registers a signalfd with the signals of the
        // process that adds it, and before `daemon` that is the parent, whose
        // signals are not ours: the child would never see SIGTERM.
        switch
            .epoll
            .add(
                switch.signals.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, Token::Signal.into()),
            )
            .map_err(sys("watching the signals"))?;
        // Ready only now, with every socket bound and the signals watched.
        crate::activation::notify_ready();
        Ok(switch)
    }

    fn announce(&self) {
        let p = &self.cfg.program;
        if self.cfg.hub {
            log_line(&format!("{p} will be a hub instead of a switch"));
        }
        let mut line = match &self.cfg.compat_v0_data {
            Some(data_path) => {
                log_line("Control protocol 0 compatibility");
                format!(
                    "{p} attached to unix sockets '{}' and '{}'",
                    self.cfg.control.display(),
                    data_path.display()
                )
            }
            None => format!(
                "{p} attached to unix socket '{}'",
                self.cfg.control.display()
            ),
        };
        if let Some(tap) = &self.cfg.tap {
            line.push_str(&format!(" tap device '{tap}'"));
        }
        // As the user gave it; a socket passed by systemd, as it was passed.
        let bess = self
            .cfg
            .bess
            .as_deref()
            .or_else(|| self.bess.as_ref().map(BoundPath::path));
        if let Some(bess) = bess {
            line.push_str(&format!(" bess socket '{}'", bess.display()));
        }
        if let Some(mgmt) = &self.cfg.managed.mgmt {
            line.push_str(&format!(" management socket '{}'", mgmt.display()));
        }
        log_line(&line);
    }
}

/// Raises the soft descriptor limit to the hard one, as a server whose ports
/// each cost descriptors should, and returns the limit it has then.
fn descriptor_limit() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    usize::try_from(limit).unwrap_or(usize::MAX)
}
