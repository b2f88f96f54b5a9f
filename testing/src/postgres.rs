//! A real PostgreSQL server for tests, from the machine's installed binaries.

use std::path::PathBuf;
use std::process::Command;

/// A private PostgreSQL server in a temporary directory, started from the installed binaries
/// (through `runuser -u postgres` when running as root), stopped on drop.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PostgresServer {
    /// Starts one, or prints why `test` is skipped and returns None when this machine has no
    /// PostgreSQL server binaries.
    pub fn start(test: &str) -> Option<Self> {
        let Some(server) = Self::try_start() else {
            eprintln!(
                "SKIPPED {test}: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (install the postgresql package)"
            );
            return None;
        };
        Some(server)
    }

    fn try_start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::Builder::new()
            .prefix("profusion-pg")
            .tempdir_in("/tmp")
            .ok()?;
        let as_postgres = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .ok()?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let pg = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str()?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str()?,
                "-o",
                &opts,
                "-l",
                log.to_str()?,
                "-w",
                "start",
            ],
        )?;
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Option<()> {
        let exe = self.bin.join(tool);
        let status = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .status()
        } else {
            Command::new(&exe).args(args).status()
        };
        match status {
            Ok(s) if s.success() => Some(()),
            other => {
                eprintln!("{tool} failed: {other:?}");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"],
        );
    }
}
