//! A private PostgreSQL cluster that the connector starts and owns when no database is given.
//!
//! The cluster lives in one folder: `pgdata/` (the cluster), `password` (the superuser's
//! generated password, mode 0600), `port` (the port last used) and `postgres.log`. It listens
//! on 127.0.0.1 only, with password authentication. PostgreSQL refuses to run as root, so
//! when the connector runs as root the cluster runs as the `postgres` system user (which
//! Debian's package creates) and the folder is handed over to that user.

use std::fmt;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::distributions::{Alphanumeric, DistString};

/// Name of the database the connector uses inside the embedded cluster.
pub const DATABASE: &str = "promscale";
const SUPERUSER: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("no PostgreSQL server binaries found (looked for initdb in {0}); install Debian's postgresql package or pass --embedded.pg-bin-dir")]
    BinariesNotFound(String),
    #[error("the embedded database runs as the 'postgres' system user when the connector runs as root, and there is no such user; install Debian's postgresql package or run as a non-root user")]
    NoPostgresUser,
    #[error("{action} failed: {detail}")]
    Command { action: String, detail: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let what = what.into();
    move |e| EmbeddedError::Io(what, e)
}

/// How to stop the server: `Fast` is a clean shutdown; `Immediate` simulates a crash
/// (PostgreSQL recovers from its WAL at the next start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Fast,
    Immediate,
}

pub struct EmbeddedPostgres {
    dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<(u32, u32)>,
    running: bool,
}

impl fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is left out on purpose.
        f.debug_struct("EmbeddedPostgres")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish()
    }
}

impl EmbeddedPostgres {
    /// Creates the cluster in `dir` if there is none yet, and starts it on a free port.
    pub fn start(dir: &Path, bin_dir: Option<&Path>) -> Result<Self, EmbeddedError> {
        let bin_dir = match bin_dir {
            Some(b) => b.to_path_buf(),
            None => find_bin_dir()?,
        };
        if !bin_dir.join("initdb").exists() {
            return Err(EmbeddedError::BinariesNotFound(bin_dir.display().to_string()));
        }
        let run_as = if is_root() { Some(postgres_user()?) } else { None };
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("restricting {}", dir.display())))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(io_err(format!("handing {} to the postgres user", dir.display())))?;
        }
        let mut pg = EmbeddedPostgres {
            dir,
            bin_dir,
            port: 0,
            password: String::new(),
            run_as,
            running: false,
        };
        if !pg.pgdata().join("PG_VERSION").exists() {
            pg.init()?;
        }
        pg.password = std::fs::read_to_string(pg.dir.join("password"))
            .map_err(io_err("reading the embedded database's password file"))?
            .trim()
            .to_string();
        let previous = std::fs::read_to_string(pg.dir.join("port"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        pg.port = match previous {
            Some(p) if port_is_free(p) => p,
            _ => free_port().map_err(io_err("finding a free port"))?,
        };
        pg.write_owned_file("port", &pg.port.to_string())?;
        pg.start_server()?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The connection URI, password included: pass it to the pool, never to a log.
    pub fn uri(&self) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{DATABASE}",
            self.password, self.port
        )
    }

    /// The connection URI with the password masked, for logs and messages.
    pub fn redacted_uri(&self) -> String {
        format!(
            "postgres://{SUPERUSER}:***@127.0.0.1:{}/{DATABASE} (password in {})",
            self.port,
            self.dir.join("password").display()
        )
    }

    pub fn stop(&mut self, mode: StopMode) -> Result<(), EmbeddedError> {
        if !self.running {
            return Ok(());
        }
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let pgdata = self.pgdata();
        self.run(
            "stopping PostgreSQL",
            "pg_ctl",
            &["stop", "-w", "-t", "60", "-m", mode, "-D", path_str(&pgdata)],
            None,
        )?;
        self.running = false;
        Ok(())
    }

    /// Starts the server again on the same port, after [`stop`](Self::stop).
    pub fn restart(&mut self) -> Result<(), EmbeddedError> {
        if self.running {
            return Ok(());
        }
        self.start_server()
    }

    fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    fn init(&self) -> Result<(), EmbeddedError> {
        let password = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
        self.write_owned_file("password", &password)?;
        let pwfile = self.dir.join("password");
        let pgdata = self.pgdata();
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        self.run(
            "creating the embedded PostgreSQL cluster (initdb)",
            "initdb",
            &[
                "-D",
                path_str(&pgdata),
                "-U",
                SUPERUSER,
                &pwfile_arg,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            None,
        )?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(pgdata.join("postgresql.conf"))
            .map_err(io_err("opening postgresql.conf"))?;
        writeln!(
            conf,
            "\n# Added by promscale-connector for its embedded database\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 200\nshared_buffers = '256MB'\nmax_wal_size = '2GB'"
        )
        .map_err(io_err("writing postgresql.conf"))?;
        // Single-user mode needs neither a port nor a password.
        self.run(
            "creating the promscale database",
            "postgres",
            &["--single", "-D", path_str(&pgdata), "-j", "postgres"],
            Some(&format!("CREATE DATABASE {DATABASE};\n")),
        )?;
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), EmbeddedError> {
        let pgdata = self.pgdata();
        let log = self.dir.join("postgres.log");
        let port = format!("-p {}", self.port);
        self.run(
            "starting PostgreSQL",
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "120",
                "-D",
                path_str(&pgdata),
                "-l",
                path_str(&log),
                "-o",
                &port,
            ],
            None,
        )
        .map_err(|e| match e {
            EmbeddedError::Command { action, detail } => EmbeddedError::Command {
                action,
                detail: format!("{detail}\nsee {} for the server's own messages", log.display()),
            },
            other => other,
        })?;
        self.running = true;
        Ok(())
    }

    fn write_owned_file(&self, name: &str, contents: &str) -> Result<(), EmbeddedError> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).map_err(io_err(format!("writing {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("restricting {}", path.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(io_err(format!("handing {} to the postgres user", path.display())))?;
        }
        Ok(())
    }

    fn run(&self, action: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), EmbeddedError> {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.args(args)
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        crate::huge_pages::as_found_for(&mut cmd);
        // pg_ctl's server outlives this call and must not keep our pipes open.
        let mut child = cmd.spawn().map_err(io_err(format!("{action}: running {program}")))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(io_err(format!("{action}: feeding {program}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(io_err(format!("{action}: waiting for {program}")))?;
        if !out.status.success() {
            let detail = format!(
                "{program} exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
            return Err(EmbeddedError::Command {
                action: action.to_string(),
                detail,
            });
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop(StopMode::Fast) {
            tracing::error!(error = %e, "could not stop the embedded PostgreSQL");
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or the folder of `initdb` on PATH.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if let Ok(initdb) = dir.join("initdb").canonicalize() {
            if let Some(bin) = initdb.parent() {
                return Ok(bin.to_path_buf());
            }
        }
    }
    Err(EmbeddedError::BinariesNotFound(
        "/usr/lib/postgresql/*/bin and PATH".to_string(),
    ))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn postgres_user() -> Result<(u32, u32), EmbeddedError> {
    let name = std::ffi::CString::new("postgres").expect("no NUL in a literal");
    // SAFETY: getpwnam is given a valid C string; the result is read before any other call
    // that could overwrite its static buffer.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(EmbeddedError::NoPostgresUser);
        }
        Ok(((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}
