//! Real JVM recordings for tests and benchmarks: a small Java workload with every kind of
//! event Profusion maps, run by the installed JDK under its Flight Recorder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A workload with every kind of event the mapping reads from a JDK recording: CPU work,
/// allocation (sampled, and in and outside TLABs), parking, and two threads contending for
/// one monitor.
pub const WORKLOAD: &str = r#"
import java.util.concurrent.locks.LockSupport;

public class Workload {
    static final Object MONITOR = new Object();
    static volatile long sink;
    static volatile boolean running = true;

    static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

    static void allocate() {
        byte[][] kept = new byte[512][];
        for (int i = 0; i < kept.length; i++) kept[i] = new byte[2048];
        byte[] large = new byte[1 << 20];
        sink += kept[511].length + large.length;
    }

    static void contend() {
        while (running) {
            synchronized (MONITOR) {
                long until = System.nanoTime() + 15_000_000L;
                while (System.nanoTime() < until) sink += fib(18);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        long deadline = System.nanoTime() + Long.parseLong(args[0]) * 1_000_000_000L;
        Thread a = new Thread(Workload::contend, "contender-a");
        Thread b = new Thread(Workload::contend, "contender-b");
        a.start();
        b.start();
        while (System.nanoTime() < deadline) {
            sink += fib(25);
            allocate();
            LockSupport.parkNanos(15_000_000L);
        }
        running = false;
        a.join();
        b.join();
    }
}
"#;

/// Milliseconds between two execution samples of a recording made by [`record`].
pub const SAMPLING_PERIOD_MS: i64 = 20;

/// The JDK the tests record with, if one is installed (scripts/install-test-clients finds or
/// installs it and exports `PROFUSION_JAVA_HOME`).
pub fn jdk(test: &str) -> Option<PathBuf> {
    let home = std::env::var_os("PROFUSION_JAVA_HOME").map(PathBuf::from);
    match home.filter(|h| h.join("bin/java").exists() && h.join("bin/jfr").exists()) {
        Some(home) => Some(home),
        None => {
            eprintln!(
                "SKIPPED {test}: no JDK 17 with the jfr tool (install openjdk-17-jdk-headless; scripts/install-test-clients does where it may)"
            );
            None
        }
    }
}

/// Records the workload for `seconds` with the JDK's `profile` settings plus both TLAB
/// allocation events, and execution samples every [`SAMPLING_PERIOD_MS`] ms (not the
/// `sampleRate` default, so the recording's own period shows), into `dir/recording.jfr`.
pub fn record(jdk: &Path, dir: &Path, seconds: u32) -> PathBuf {
    let mut settings =
        std::fs::read_to_string(jdk.join("lib/jfr/profile.jfc")).expect("profile.jfc");
    let mut set = |event: &str, from: &str, to: &str| {
        let at = settings
            .find(&format!("<event name=\"{event}\">"))
            .unwrap_or_else(|| panic!("{event} in profile.jfc"));
        let off = settings[at..]
            .find(from)
            .unwrap_or_else(|| panic!("{from} of {event}"))
            + at;
        settings.replace_range(off..off + from.len(), to);
    };
    set("jdk.ObjectAllocationInNewTLAB", ">false<", ">true<");
    set("jdk.ObjectAllocationOutsideTLAB", ">false<", ">true<");
    set(
        "jdk.ExecutionSample",
        ">10 ms<",
        &format!(">{SAMPLING_PERIOD_MS} ms<"),
    );
    std::fs::write(dir.join("settings.jfc"), settings).unwrap();
    std::fs::write(dir.join("Workload.java"), WORKLOAD).unwrap();
    let recording = dir.join("recording.jfr");
    let out = Command::new(jdk.join("bin/java"))
        .current_dir(dir)
        .arg(format!(
            "-XX:StartFlightRecording=filename={},settings={},dumponexit=true",
            recording.display(),
            dir.join("settings.jfc").display()
        ))
        .args(["Workload.java", &seconds.to_string()])
        .output()
        .expect("run java");
    assert!(
        out.status.success(),
        "java: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    recording
}
