//! `cargo xtask dist`: the Debian package that replaces `uml-utilities`, and
//! `cargo xtask install`: the same programs, man pages and completions under a
//! prefix for people who build from source.
//!
//! The package is assembled here and built by `dpkg-deb`, not by cargo-deb:
//! the maintainer scripts (accounts, `dpkg-statoverride`, unit enablement),
//! the systemd generator, conffiles and the man pages and completions rendered
//! from the tools' clap definitions all need a staging tree of our own anyway,
//! and `dpkg-deb` and `dpkg-shlibdeps` are already on every Debian machine
//! (cargo-deb would be one more tool to build in CI, for the easy part).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap_complete::Shell;

/// The package's name; it `Provides`, `Conflicts` with and `Replaces` `uml-utilities`.
pub const PACKAGE: &str = "uml-utilities-rs";

/// One program of the suite.
pub struct Tool {
    /// Binary and cargo package name.
    pub name: &'static str,
    /// Cargo package.
    pub package: &'static str,
    /// Man page section (8 for what root or the kernel runs, as Debian files `tunctl`).
    pub section: &'static str,
    /// Installed directory, relative to the prefix (the kernel runs `port-helper`
    /// from `/usr/lib/uml`).
    pub dir: &'static str,
    /// Its clap definition.
    pub command: fn() -> clap::Command,
}

/// Every program, in the order they are built and listed.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "uml_switch",
        package: "uml_switch",
        section: "1",
        dir: "bin",
        command: uml_switch::cli::command,
    },
    Tool {
        name: "uml_switchctl",
        package: "uml_switchctl",
        section: "1",
        dir: "bin",
        command: uml_switchctl::cli::command,
    },
    Tool {
        name: "uml_mconsole",
        package: "uml_mconsole",
        section: "1",
        dir: "bin",
        command: uml_mconsole::cli::command,
    },
    Tool {
        name: "uml_mkcow",
        package: "uml_mkcow",
        section: "1",
        dir: "bin",
        command: uml_mkcow::cli::command,
    },
    Tool {
        name: "uml_moo",
        package: "uml_moo",
        section: "1",
        dir: "bin",
        command: uml_moo::cli::command,
    },
    Tool {
        name: "tunctl",
        package: "tunctl",
        section: "8",
        dir: "bin",
        command: tunctl::cli::command,
    },
    Tool {
        name: "uml_net",
        package: "uml_net",
        section: "8",
        dir: "bin",
        command: uml_net::cli::command,
    },
    Tool {
        name: "uml_watchdog",
        package: "uml_watchdog",
        section: "8",
        dir: "bin",
        command: uml_watchdog::cli::command,
    },
    Tool {
        name: "port-helper",
        package: "port-helper",
        section: "8",
        dir: "lib/uml",
        command: port_helper::cli::command,
    },
];

/// Where man pages and completions go under a root.
struct DocLayout {
    man: PathBuf,
    bash: PathBuf,
    zsh: PathBuf,
    fish: PathBuf,
    /// Man pages gzipped (Debian) or plain.
    gzip: bool,
}

/// The cargo target directory (honouring `CARGO_TARGET_DIR`).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Builds every tool once, optimised; the package, `install` and the demo
/// all use these binaries (one command line, so cargo does the work once).
pub fn build_release(root: &Path) -> Result<PathBuf> {
    let mut args = vec!["build", "--release", "--locked"];
    for tool in TOOLS {
        args.extend(["--package", tool.package, "--bin", tool.name]);
    }
    crate::cargo(root, &args)?;
    Ok(target_dir(root).join("release"))
}

/// `cargo xtask dist [--out DIR]`: builds the .deb and prints its path.
pub fn dist(root: &Path, args: &[String]) -> Result<()> {
    let out = match args {
        [] => target_dir(root).join("debian"),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => bail!("usage: cargo xtask dist [--out DIR]"),
    };
    let deb = build_deb(root, &out)?;
    println!("{}", deb.display());
    Ok(())
}

/// Builds the package into `out` and returns its path.
pub fn build_deb(root: &Path, out: &Path) -> Result<PathBuf> {
    let release = build_release(root)?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = command_output(Command::new("dpkg").arg("--print-architecture"))?;
    // dpkg-shlibdeps wants the tree as debhelper lays it out: debian/<package>/.
    let work = target_dir(root).join("debian-build");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let tree = work.join("debian").join(PACKAGE);
    let usr = tree.join("usr");

    let mut binaries = Vec::new();
    for tool in TOOLS {
        let dest = usr.join(tool.dir).join(tool.name);
        install_file(&release.join(tool.name), &dest, 0o755)?;
        // As dh_strip does; the separate debug symbols are not shipped.
        crate::run(
            Command::new("strip")
                .args([
                    "--strip-unneeded",
                    "--remove-section=.comment",
                    "--remove-section=.note",
                ])
                .arg(&dest),
        )?;
        binaries.push(dest);
    }
    render_docs(
        &DocLayout {
            man: usr.join("share/man"),
            bash: usr.join("share/bash-completion/completions"),
            zsh: usr.join("share/zsh/vendor-completions"),
            fish: usr.join("share/fish/vendor_completions.d"),
            gzip: true,
        },
        version,
    )?;

    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let from = |name: &str| files.join(name);
    install_file(
        &from("uml-switch.socket"),
        &tree.join("lib/systemd/system/uml-switch.socket"),
        0o644,
    )?;
    install_file(
        &from("uml-switch-mgmt.socket"),
        &tree.join("lib/systemd/system/uml-switch-mgmt.socket"),
        0o644,
    )?;
    install_file(
        &from("uml-switch.service"),
        &tree.join("lib/systemd/system/uml-switch.service"),
        0o644,
    )?;
    install_file(
        &from("uml-utilities-generator"),
        &tree.join("lib/systemd/system-generators/uml-utilities-generator"),
        0o755,
    )?;
    install_file(
        &from("default"),
        &tree.join("etc/default/uml-utilities"),
        0o644,
    )?;
    install_file(
        &from("if-pre-up"),
        &tree.join("etc/network/if-pre-up.d/uml-utilities"),
        0o755,
    )?;
    let doc = usr.join("share/doc").join(PACKAGE);
    install_file(&from("copyright"), &doc.join("copyright"), 0o644)?;
    install_file(&from("README.Debian"), &doc.join("README.Debian"), 0o644)?;
    let maintainer = maintainer();
    // A native package (no Debian revision): its one changelog is changelog.gz.
    write_gz(
        &doc.join("changelog.gz"),
        &format!(
            "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
             * Built by cargo xtask dist.\n\n \
             -- {maintainer}  {}\n",
            command_output(Command::new("date").args(["-R", "-u", "-d", "@0"]))?
        ),
    )?;

    let control_dir = tree.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        install_file(&from(script), &control_dir.join(script), 0o755)?;
    }
    write_file(
        &control_dir.join("conffiles"),
        "/etc/default/uml-utilities\n/etc/network/if-pre-up.d/uml-utilities\n",
        0o644,
    )?;
    let depends = shlib_depends(&work, &binaries)?;
    let installed_kib = command_output(
        Command::new("du")
            .args(["-sk", "--exclude=DEBIAN"])
            .arg(&tree),
    )?
    .split_whitespace()
    .next()
    .unwrap_or("0")
    .to_owned();
    write_file(
        &control_dir.join("control"),
        &format!(
            "Package: {PACKAGE}\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: {maintainer}\n\
             Installed-Size: {installed_kib}\n\
             Depends: {depends}, adduser, init-system-helpers (>= 1.54~)\n\
             Recommends: user-mode-linux\n\
             Provides: uml-utilities\n\
             Conflicts: uml-utilities\n\
             Replaces: uml-utilities\n\
             Section: otherosfs\n\
             Priority: optional\n\
             Homepage: https://github.com/uml-utilities-rs/uml-utilities-rs\n\
             Description: User-mode Linux utility programs, rewritten in Rust\n \
             The host-side tools for User-Mode Linux guests: uml_switch (a switch\n \
             for the daemon and BESS transports, with a socket-activated system\n \
             switch) and its management client uml_switchctl, uml_mconsole,\n \
             uml_mkcow, uml_moo, tunctl, uml_net, uml_watchdog and port-helper.\n \
             The same command lines, files and wire formats as the C\n \
             uml-utilities, which this package replaces, with man pages and bash,\n \
             zsh and fish completions.\n"
        ),
        0o644,
    )?;
    write_md5sums(&tree)?;
    fix_dir_modes(&tree)?;

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    crate::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&tree)
            .arg(&deb)
            // Standard output carries only the package's path.
            .stdout(std::io::stderr()),
    )?;
    Ok(deb)
}

/// `cargo xtask install [--prefix DIR]`: binaries, man pages and completions
/// under DIR (default `/usr/local`).
pub fn install(root: &Path, args: &[String]) -> Result<()> {
    let prefix = match args {
        [] => PathBuf::from("/usr/local"),
        [flag, dir] if flag == "--prefix" => PathBuf::from(dir),
        [one] if one.starts_with("--prefix=") => PathBuf::from(one.trim_start_matches("--prefix=")),
        _ => bail!("usage: cargo xtask install [--prefix DIR]"),
    };
    let release = build_release(root)?;
    for tool in TOOLS {
        let dest = prefix.join(tool.dir).join(tool.name);
        install_file(&release.join(tool.name), &dest, 0o755)?;
        eprintln!("installed {}", dest.display());
    }
    let share = prefix.join("share");
    render_docs(
        &DocLayout {
            man: share.join("man"),
            bash: share.join("bash-completion/completions"),
            zsh: share.join("zsh/site-functions"),
            fish: share.join("fish/vendor_completions.d"),
            gzip: false,
        },
        env!("CARGO_PKG_VERSION"),
    )?;
    eprintln!(
        "installed man pages under {} and bash, zsh and fish completions under {}",
        share.join("man").display(),
        share.display()
    );
    let uml_net = prefix.join("bin/uml_net");
    let port_helper = prefix.join("lib/uml/port-helper");
    println!(
        "uml_net needs its privileges (setuid root, run by group uml-net, as Debian installs it):\n  \
         sudo sh -c 'getent group uml-net >/dev/null || addgroup --system uml-net; \
         chown root:uml-net {0} && chmod 4754 {0}'",
        uml_net.display()
    );
    if port_helper != Path::new("/usr/lib/uml/port-helper") {
        println!(
            "the kernel runs /usr/lib/uml/port-helper; for port: consoles set UML_PORT_HELPER={}",
            port_helper.display()
        );
    }
    Ok(())
}

/// The package's maintainer: `DEBFULLNAME <DEBEMAIL>` as Debian's tools take
/// them, else the project's placeholder (to be replaced by whoever publishes it).
fn maintainer() -> String {
    let name =
        std::env::var("DEBFULLNAME").unwrap_or_else(|_| "uml-utilities-rs maintainers".to_owned());
    let mail =
        std::env::var("DEBEMAIL").unwrap_or_else(|_| "uml-utilities-rs@example.org".to_owned());
    format!("{name} <{mail}>")
}

/// Writes each tool's man page and its bash, zsh and fish completions.
fn render_docs(layout: &DocLayout, version: &'static str) -> Result<()> {
    for tool in TOOLS {
        let cmd = (tool.command)().version(version);
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .section(tool.section)
            .source(format!("{PACKAGE} {version}"))
            .manual("User-Mode Linux utilities")
            .render(&mut page)
            .with_context(|| format!("rendering the man page of {}", tool.name))?;
        let dir = layout.man.join(format!("man{}", tool.section));
        let name = format!("{}.{}", tool.name, tool.section);
        if layout.gzip {
            write_gz(
                &dir.join(format!("{name}.gz")),
                &String::from_utf8_lossy(&page),
            )?;
        } else {
            write_file(&dir.join(name), &String::from_utf8_lossy(&page), 0o644)?;
        }
        for (shell, dir, file) in [
            (Shell::Bash, &layout.bash, tool.name.to_owned()),
            (Shell::Zsh, &layout.zsh, format!("_{}", tool.name)),
            (Shell::Fish, &layout.fish, format!("{}.fish", tool.name)),
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), tool.name, &mut script);
            write_file(&dir.join(file), &String::from_utf8_lossy(&script), 0o644)?;
        }
    }
    Ok(())
}

/// The `Depends` the binaries' shared libraries need, from `dpkg-shlibdeps`.
fn shlib_depends(work: &Path, binaries: &[PathBuf]) -> Result<String> {
    write_file(
        &work.join("debian/control"),
        &format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
        0o644,
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.arg("-O").current_dir(work);
    for binary in binaries {
        cmd.arg(format!("-e{}", binary.display()));
    }
    let line = command_output(&mut cmd)
        .context("dpkg-shlibdeps (package dpkg-dev) computes the package's Depends")?;
    let depends = line
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no Depends: {line}"))?;
    fs::remove_file(work.join("debian/control")).context("removing the scratch control file")?;
    Ok(depends.trim().to_owned())
}

/// `DEBIAN/md5sums`: every file under the tree but the control area.
fn write_md5sums(tree: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect_files(tree, tree, &mut files)?;
    files.retain(|rel| !rel.starts_with("DEBIAN"));
    files.sort();
    let mut cmd = Command::new("md5sum");
    cmd.current_dir(tree).args(&files);
    let sums = command_output(&mut cmd)?;
    write_file(&tree.join("DEBIAN/md5sums"), &format!("{sums}\n"), 0o644)
}

fn collect_files(tree: &Path, dir: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(tree, &path, into)?;
        } else if let Ok(rel) = path.strip_prefix(tree) {
            into.push(rel.to_path_buf());
        }
    }
    Ok(())
}

/// Copies `from` to `to` (making its directories, mode 0755) with `mode`.
fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    make_parent(to)?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    make_parent(path)?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Writes `text` gzipped at maximum compression without a name or time stamp,
/// as Debian wants man pages and changelogs.
fn write_gz(path: &Path, text: &str) -> Result<()> {
    make_parent(path)?;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = text.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("running gzip")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the gzip writer panicked"))?
        .context("feeding gzip")?;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    fs::write(path, out.stdout).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

fn make_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))
        }
        None => Ok(()),
    }
}

/// Every directory of the tree 0755, whatever the umask made them.
fn fix_dir_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            fix_dir_modes(&path)?;
        }
    }
    Ok(())
}

/// Runs a command and returns its standard output, trimmed.
fn command_output(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start {line}"))?;
    if !out.status.success() {
        bail!(
            "{line} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
