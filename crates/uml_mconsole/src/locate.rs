//! Finding a machine's mconsole socket from the name a user gives.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The directories that hold one subdirectory per running UML (`<dir>/<umid>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmlDirs(pub Vec<PathBuf>);

impl UmlDirs {
    /// The search path: the `--uml-dir` options alone if given; else the
    /// colon-separated `$UML_DIR` in front of `~/.uml` and `/tmp/uml` (the C
    /// client's two, which an unrelated `UML_DIR` must not hide), then
    /// `~/.netkit/mconsole`, where netkit boots its guests. Each directory once.
    pub fn new(cli: &[PathBuf], env_uml_dir: Option<OsString>, home: Option<OsString>) -> Self {
        if !cli.is_empty() {
            return Self(cli.to_vec());
        }
        let mut dirs: Vec<PathBuf> = env_uml_dir
            .map(|list| std::env::split_paths(&list).collect())
            .unwrap_or_default();
        let home = home.filter(|h| !h.is_empty()).map(PathBuf::from);
        if let Some(home) = &home {
            dirs.push(home.join(".uml"));
        }
        dirs.push(PathBuf::from("/tmp/uml"));
        if let Some(home) = &home {
            dirs.push(home.join(".netkit/mconsole"));
        }
        let mut unique: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            if !dir.as_os_str().is_empty() && !unique.iter().any(|d| same_dir(d, &dir)) {
                unique.push(dir);
            }
        }
        Self(unique)
    }

    /// The search path of this process's environment.
    pub fn from_env(cli: &[PathBuf]) -> Self {
        Self::new(cli, std::env::var_os("UML_DIR"), std::env::var_os("HOME"))
    }
}

/// `~/.uml` and `~/.uml/` are one directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    a.components().eq(b.components())
}

/// A machine to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The name the user gave (a umid or a socket path).
    pub name: String,
    /// The mconsole socket.
    pub socket: PathBuf,
    /// The instance directory holding `pid`, when the socket was found in one.
    pub instance_dir: Option<PathBuf>,
    /// The uml dir it was found in (`None` when named by its socket path).
    pub found_in: Option<PathBuf>,
}

/// An instance directory the search passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The instance directory.
    pub dir: PathBuf,
    /// Why it was not used.
    pub reason: String,
}

/// The name matched nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no machine '{name}': none of {} exists{}", tried.iter().map(|p| format!("'{}'", p.display())).collect::<Vec<_>>().join(", "), skipped_text(skipped))]
pub struct NotFound {
    /// The name looked up.
    pub name: String,
    /// Every path tried, in order.
    pub tried: Vec<PathBuf>,
    /// Instance directories of that name that were not trusted.
    pub skipped: Vec<Skipped>,
}

fn skipped_text(skipped: &[Skipped]) -> String {
    skipped
        .iter()
        .map(|s| format!("; skipped '{}': {}", s.dir.display(), s.reason))
        .collect()
}

/// Why an instance directory found by searching is not used: in a shared uml
/// dir (`/tmp/uml` is searched by default) anyone can plant a directory under
/// a machine's name, with a `pid` file naming any process. Only the caller's
/// and root's own directories are trusted; a socket path given by the user is
/// always used.
pub fn untrusted_reason(instance: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(instance).ok()?;
    if meta.file_type().is_symlink() {
        return Some(
            "it is a symbolic link, not a directory; name its socket path to use it".into(),
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    let owner = meta.uid();
    let whose = if me == 0 {
        "root".to_owned()
    } else {
        format!("you (uid {me}) or root")
    };
    (owner != me && owner != 0).then(|| {
        format!("it belongs to uid {owner}, not to {whose}; name its socket path to use it")
    })
}

impl Machine {
    /// Looks `name` up as the C client does: `<dir>/<name>/mconsole` for each
    /// uml dir in order, then `name` itself as a socket path. The first that
    /// exists wins; instance directories that belong to another user are
    /// passed over (see [`untrusted_reason`]).
    pub fn locate(name: &str, dirs: &UmlDirs) -> Result<Self, NotFound> {
        let mut tried = Vec::new();
        let mut skipped = Vec::new();
        // A name with a slash is a path; as a umid it could only escape the uml dir.
        if !name.contains('/') && !name.is_empty() && name != "." && name != ".." {
            for dir in &dirs.0 {
                let instance = dir.join(name);
                let socket = instance.join("mconsole");
                if socket.exists() {
                    if let Some(reason) = untrusted_reason(&instance) {
                        skipped.push(Skipped {
                            dir: instance,
                            reason,
                        });
                        continue;
                    }
                    return Ok(Self {
                        name: name.to_owned(),
                        socket,
                        instance_dir: Some(instance),
                        found_in: Some(dir.clone()),
                    });
                }
                tried.push(socket);
            }
        }
        let path = PathBuf::from(name);
        if !name.is_empty() && path.exists() {
            // A socket given by path still has its pid file beside it when it
            // is an instance directory's socket.
            let instance_dir = path
                .parent()
                .filter(|dir| dir.join("pid").is_file())
                .map(Path::to_path_buf);
            return Ok(Self {
                name: name.to_owned(),
                socket: path,
                instance_dir,
                found_in: None,
            });
        }
        tried.push(path);
        Err(NotFound {
            name: name.to_owned(),
            tried,
            skipped,
        })
    }

    /// The PID in the instance directory's `pid` file, as the file says; see
    /// [`crate::process`] for whether that process is the machine.
    pub fn pid(&self) -> Option<i32> {
        let dir = self.instance_dir.as_ref()?;
        std::fs::read_to_string(dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Up to 11 characters of the name, as the C client's prompt shows it.
    pub fn prompt(&self) -> String {
        format!("({}) ", self.name.chars().take(11).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_precedence() {
        let cli = [PathBuf::from("/a")];
        let env = Some(OsString::from("/b:/c"));
        let home = Some(OsString::from("/home/u"));
        assert_eq!(UmlDirs::new(&cli, env.clone(), home.clone()).0, cli);
        // UML_DIR comes first and never hides the defaults.
        assert_eq!(
            UmlDirs::new(&[], env, home.clone()).0,
            [
                "/b",
                "/c",
                "/home/u/.uml",
                "/tmp/uml",
                "/home/u/.netkit/mconsole"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            UmlDirs::new(&[], None, home.clone()).0,
            ["/home/u/.uml", "/tmp/uml", "/home/u/.netkit/mconsole"].map(PathBuf::from)
        );
        // Named twice, searched once.
        assert_eq!(
            UmlDirs::new(&[], Some(OsString::from("/tmp/uml/:/home/u/.uml")), home).0,
            ["/tmp/uml/", "/home/u/.uml", "/home/u/.netkit/mconsole"].map(PathBuf::from)
        );
        assert_eq!(UmlDirs::new(&[], None, None).0, [PathBuf::from("/tmp/uml")]);
        assert_eq!(
            UmlDirs::new(&[], Some(OsString::new()), None).0,
            [PathBuf::from("/tmp/uml")]
        );
    }

    #[test]
    fn umid_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("one");
        let second = dir.path().join("two");
        std::fs::create_dir_all(second.join("vm1")).unwrap();
        std::fs::write(second.join("vm1/mconsole"), "").unwrap();
        std::fs::write(second.join("vm1/pid"), "4242\n").unwrap();
        let dirs = UmlDirs(vec![first.clone(), second.clone()]);
        let m = Machine::locate("vm1", &dirs).unwrap();
        assert_eq!(m.socket, second.join("vm1/mconsole"));
        assert_eq!(m.found_in.as_deref(), Some(second.as_path()));
        assert_eq!(m.pid(), Some(4242));
        let by_path = second.join("vm1/mconsole");
        let m = Machine::locate(by_path.to_str().unwrap(), &dirs).unwrap();
        assert_eq!(m.socket, by_path);
        assert_eq!(m.pid(), Some(4242));
        let err = Machine::locate("vm2", &dirs).unwrap_err();
        assert_eq!(err.tried.len(), 3);
        assert!(err.to_string().contains("one/vm2/mconsole"), "{err}");
    }

    #[test]
    fn prompt_keeps_eleven_characters() {
        let m = Machine {
            name: "a-very-long-machine-name".into(),
            socket: PathBuf::new(),
            instance_dir: None,
            found_in: None,
        };
        assert_eq!(m.prompt(), "(a-very-long) ");
    }
}
