//! What a command line asks for: a local command, or text for the kernel.

use std::path::{Path, PathBuf};

/// The most text one `log` request carries ("log " plus this stays under 511 bytes).
pub const LOG_CHUNK: usize = 506;

/// One command line, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `quit`: leave.
    Quit,
    /// `help`: the kernel's help, then the local commands'.
    Help,
    /// `switch NAME`: talk to another machine from now on.
    Switch(String),
    /// `log TEXT` or `log -f FILE`: write to the kernel log, split as needed.
    Log(LogSource),
    /// `mconsole-version`: this client's protocol version.
    MconsoleVersion,
    /// `int`: SIGINT to the machine's process.
    Int,
    /// Anything else goes to the kernel as it is (after `config ubd` paths are made absolute).
    Remote(String),
}

/// Where `log` text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// The rest of the command line.
    Text(String),
    /// A file's content.
    File(PathBuf),
}

/// Local commands, matched by prefix in this order, as the C client does
/// (so `quitting` is `quit` and `interrupt` is `int`).
const LOCAL: [&str; 6] = ["quit", "help", "switch", "log", "mconsole-version", "int"];

impl Action {
    /// Interprets a command line; `cwd` resolves relative `config ubd` paths.
    pub fn parse(line: &str, cwd: &Path) -> Self {
        let Some(local) = LOCAL.iter().find(|name| line.starts_with(**name)) else {
            return Self::Remote(absolutize_ubd_config(line, cwd));
        };
        let rest = line[local.len()..].trim_start();
        match *local {
            "quit" => Self::Quit,
            "help" => Self::Help,
            "switch" => Self::Switch(rest.trim_end().to_owned()),
            "log" => match rest.strip_prefix("-f") {
                Some(file) if file.is_empty() || file.starts_with(' ') => {
                    Self::Log(LogSource::File(PathBuf::from(file.trim())))
                }
                // After "log " the kernel logs the bytes as they are.
                _ => Self::Log(LogSource::Text(line.get(4..).unwrap_or("").to_owned())),
            },
            "mconsole-version" => Self::MconsoleVersion,
            _ => Self::Int,
        }
    }
}

/// The `log` requests for `text`: chunks of at most [`LOG_CHUNK`] bytes, and a
/// final newline of its own when the text does not end in one.
pub fn log_requests(text: &[u8]) -> Vec<Vec<u8>> {
    let mut requests: Vec<Vec<u8>> = text
        .chunks(LOG_CHUNK)
        .map(|chunk| [b"log ".as_slice(), chunk].concat())
        .collect();
    if !text.ends_with(b"\n") {
        requests.push(b"log \n".to_vec());
    }
    requests
}

/// Makes the file names of `config ubdN...=A[,B...]` absolute, since the kernel
/// resolves them from its own working directory. The directory part is resolved
/// physically and the file name kept as given, as the C client does; unlike it,
/// files directly in `/` work. A path that cannot be resolved is sent unchanged.
pub fn absolutize_ubd_config(line: &str, cwd: &Path) -> String {
    let Some(spec) = line.strip_prefix("config ubd") else {
        return line.to_owned();
    };
    let Some((device, files)) = spec.split_once('=') else {
        return line.to_owned();
    };
    let files: Vec<String> = files
        .split(',')
        .enumerate()
        .map(|(i, file)| {
            // Only the COW and backing names are paths; a serial follows them.
            if i >= 2 || file.is_empty() || file.starts_with('/') {
                return file.to_owned();
            }
            absolute(Path::new(file), cwd).unwrap_or_else(|| file.to_owned())
        })
        .collect();
    format!("config ubd{device}={}", files.join(","))
}

fn absolute(file: &Path, cwd: &Path) -> Option<String> {
    let joined = cwd.join(file);
    let name = joined.file_name()?;
    let dir = joined.parent()?.canonicalize().ok()?;
    dir.join(name).to_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Action {
        Action::parse(line, Path::new("/"))
    }

    #[test]
    fn local_commands_match_by_prefix() {
        assert_eq!(parse("quit"), Action::Quit);
        assert_eq!(parse("quitting"), Action::Quit);
        assert_eq!(parse("help"), Action::Help);
        assert_eq!(parse("switch vm2"), Action::Switch("vm2".into()));
        assert_eq!(parse("mconsole-version"), Action::MconsoleVersion);
        assert_eq!(parse("int"), Action::Int);
        assert_eq!(parse("version"), Action::Remote("version".into()));
        assert_eq!(parse(" quit"), Action::Remote(" quit".into()));
    }

    #[test]
    fn log_text_and_file() {
        assert_eq!(
            parse("log hello world"),
            Action::Log(LogSource::Text("hello world".into()))
        );
        assert_eq!(
            parse("log -f /tmp/x"),
            Action::Log(LogSource::File("/tmp/x".into()))
        );
        assert_eq!(
            parse("log -foo"),
            Action::Log(LogSource::Text("-foo".into()))
        );
    }

    #[test]
    fn log_is_split_and_ends_with_a_newline() {
        assert_eq!(
            log_requests(b"hi"),
            vec![b"log hi".to_vec(), b"log \n".to_vec()]
        );
        assert_eq!(log_requests(b"hi\n"), vec![b"log hi\n".to_vec()]);
        let long = vec![b'x'; 1000];
        let reqs = log_requests(&long);
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].len(), 4 + LOG_CHUNK);
        assert!(reqs.iter().all(|r| r.len() <= 511));
    }

    #[test]
    fn ubd_config_paths_become_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("sub")).unwrap();
        let cwd = real.join("sub");
        assert_eq!(
            absolutize_ubd_config("config ubd1=disk.img", &cwd),
            format!("config ubd1={}/sub/disk.img", real.display())
        );
        assert_eq!(
            absolutize_ubd_config("config ubd2r=a.cow,../b.img", &cwd),
            format!("config ubd2r={0}/sub/a.cow,{0}/b.img", real.display())
        );
        assert_eq!(
            absolutize_ubd_config("config ubd1=/abs.img", &cwd),
            "config ubd1=/abs.img"
        );
        assert_eq!(absolutize_ubd_config("config ubd1", &cwd), "config ubd1");
        assert_eq!(
            absolutize_ubd_config("config eth1=tuntap,tap0", &cwd),
            "config eth1=tuntap,tap0"
        );
        assert_eq!(
            absolutize_ubd_config("config ubd1=nodir/x.img", &cwd),
            "config ubd1=nodir/x.img"
        );
    }
}
