//! Detection bundles: a folder of detectors that a detection team keeps in git, lints, tests,
//! signs and pushes to agents.
//!
//! ```text
//! bundle.toml            name, version, authors, description, targets, min_agent_version,
//!                        [heuristics] thresholds
//! **/*.rules             network rules (Suricata language)
//! **/*.yml, **/*.yaml    Sigma rules (Linux process creation and file events)
//! **/*.ioc               indicator lists (lindi_shared::detect::ioc format)
//! tests/NAME/test.toml   a test: a fixture capture and/or host events, and the detections
//!                        they must and must not produce
//! ```
//!
//! Everything under `tests/` is fixture, not detector. A bundle travels as a canonical archive
//! (files sorted by path, each framed with its length) signed with ed25519: the signature
//! covers every byte of every file, so a file changed after signing, added or removed fails
//! verification. Agents and the collector accept only bundles signed by a key in their own
//! configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::detect::heuristics::{HeuristicConfig, HeuristicsSection};
use crate::detect::ioc::IocSet;
use crate::detect::{Engine, RuleSet};
use crate::net::flow::FlowConfig;
use crate::net::pcapfile::PcapFile;
use crate::net::pipeline::{NetRecord, Pipeline};
use crate::proto::{DetectionEvent, Event, FileEvent, ProcessAction, ProcessEvent, event};
use crate::sigma::SigmaRules;

/// Most files in a bundle.
pub const MAX_FILES: usize = 2_000;
/// Largest file in a bundle (fixture captures included).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Largest bundle, all files together.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;
/// Longest path inside a bundle.
pub const MAX_PATH_BYTES: usize = 255;

const ARCHIVE_MAGIC: &[u8] = b"LINDI-BUNDLE/1\n";
const SIGNED_MAGIC: &[u8] = b"LINDI-SIGNED-BUNDLE/1\n";
/// What a signature covers: this context, then the SHA-256 of the archive.
const SIGNING_CONTEXT: &[u8] = b"lindi detection bundle v1\0";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("bundle.toml: {0}")]
    Manifest(String),
    #[error("bundle archive: {0}")]
    Archive(String),
    #[error("the bundle is not signed")]
    Unsigned,
    #[error("signed by key {0}, which is not trusted here")]
    UnknownKey(String),
    #[error("the signature does not match the content (changed after signing?)")]
    BadSignature,
    #[error("key: {0}")]
    Key(String),
}

/// A semantic version `MAJOR.MINOR.PATCH[-PRERELEASE]`, ordered as semver orders them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: String,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, String> {
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, p),
            None => (s, ""),
        };
        let core = core.split_once('+').map_or(core, |(c, _)| c);
        let nums: Vec<&str> = core.split('.').collect();
        let num = |n: &str| {
            if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
                return None;
            }
            n.parse::<u64>().ok()
        };
        match nums.as_slice() {
            [a, b, c] => match (num(a), num(b), num(c)) {
                (Some(major), Some(minor), Some(patch)) => {
                    let pre = pre.split('+').next().unwrap_or_default();
                    if !pre
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                    {
                        return Err(format!("{s:?}: bad pre-release"));
                    }
                    Ok(Version {
                        major,
                        minor,
                        patch,
                        pre: pre.to_string(),
                    })
                }
                _ => Err(format!("{s:?} is not MAJOR.MINOR.PATCH")),
            },
            _ => Err(format!("{s:?} is not MAJOR.MINOR.PATCH")),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(o.major, o.minor, o.patch))
            // A pre-release comes before its release.
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => self.pre.cmp(&o.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        Ok(())
    }
}

/// Which agents a bundle is for; empty lists mean every one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Targets {
    pub groups: Vec<String>,
    pub constituencies: Vec<String>,
}

/// `bundle.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Lower-case letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// Semantic version.
    pub version: String,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub targets: Targets,
    /// Agents older than this do not load it.
    #[serde(default)]
    pub min_agent_version: Option<String>,
    /// Thresholds of the network heuristics (every field optional; defaults are Zeek's).
    #[serde(default)]
    pub heuristics: Option<HeuristicsSection>,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, BundleError> {
        let m: Manifest = toml::from_str(text).map_err(|e| BundleError::Manifest(e.to_string()))?;
        let name_ok = !m.name.is_empty()
            && m.name.len() <= 64
            && m.name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if !name_ok {
            return Err(BundleError::Manifest(format!(
                "name {:?}: 1 to 64 of a-z, 0-9, '-', '_', '.'",
                m.name
            )));
        }
        Version::parse(&m.version).map_err(|e| BundleError::Manifest(format!("version: {e}")))?;
        if let Some(v) = &m.min_agent_version {
            Version::parse(v)
                .map_err(|e| BundleError::Manifest(format!("min_agent_version: {e}")))?;
        }
        if let Some(h) = &m.heuristics {
            h.to_config()
                .map_err(|e| BundleError::Manifest(format!("heuristics: {e}")))?;
        }
        Ok(m)
    }

    pub fn version(&self) -> Version {
        // Checked by `parse`.
        Version::parse(&self.version).unwrap_or(Version {
            major: 0,
            minor: 0,
            patch: 0,
            pre: String::new(),
        })
    }
}

/// A bundle: its manifest and every file, by path relative to the bundle's root.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    pub manifest: Manifest,
    pub files: BTreeMap<String, Vec<u8>>,
}

fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > MAX_PATH_BYTES {
        return Err(format!("path length must be 1..={MAX_PATH_BYTES}"));
    }
    if p.starts_with('/')
        || p.contains('\\')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || p.chars().any(char::is_control)
    {
        return Err("not a plain relative path".into());
    }
    Ok(())
}

impl Bundle {
    /// Build from files (checks paths, sizes and the manifest).
    pub fn from_files(files: BTreeMap<String, Vec<u8>>) -> Result<Bundle, BundleError> {
        if files.len() > MAX_FILES {
            return Err(BundleError::Archive(format!("more than {MAX_FILES} files")));
        }
        let mut total = 0u64;
        for (p, data) in &files {
            check_path(p).map_err(|message| BundleError::File {
                path: p.clone(),
                message,
            })?;
            if data.len() as u64 > MAX_FILE_BYTES {
                return Err(BundleError::File {
                    path: p.clone(),
                    message: format!("larger than {MAX_FILE_BYTES} bytes"),
                });
            }
            total += data.len() as u64;
        }
        if total > MAX_BUNDLE_BYTES {
            return Err(BundleError::Archive(format!(
                "larger than {MAX_BUNDLE_BYTES} bytes in all"
            )));
        }
        let manifest = files
            .get("bundle.toml")
            .ok_or_else(|| BundleError::Manifest("missing".into()))?;
        let text =
            std::str::from_utf8(manifest).map_err(|_| BundleError::Manifest("not UTF-8".into()))?;
        Ok(Bundle {
            manifest: Manifest::parse(text)?,
            files,
        })
    }

    /// Read a bundle folder. Hidden files and folders (`.git`) are left out; symbolic links
    /// are refused (a signed bundle must not depend on what a link points to).
    pub fn read_dir(root: &Path) -> Result<Bundle, BundleError> {
        let err = |path: &Path, message: String| BundleError::File {
            path: path.display().to_string(),
            message,
        };
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| err(&dir, e.to_string()))?;
            for entry in entries {
                let entry = entry.map_err(|e| err(&dir, e.to_string()))?;
                let path = entry.path();
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let meta =
                    std::fs::symlink_metadata(&path).map_err(|e| err(&path, e.to_string()))?;
                if meta.file_type().is_symlink() {
                    return Err(err(
                        &path,
                        "a symbolic link; bundles hold plain files".into(),
                    ));
                }
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !meta.is_file() {
                    continue;
                }
                let rel = path
                    .strip_prefix(root)
                    .map_err(|e| err(&path, e.to_string()))?
                    .to_str()
                    .ok_or_else(|| err(&path, "the path is not UTF-8".into()))?
                    .to_string();
                if meta.len() > MAX_FILE_BYTES {
                    return Err(err(&path, format!("larger than {MAX_FILE_BYTES} bytes")));
                }
                total += meta.len();
                if total > MAX_BUNDLE_BYTES || files.len() >= MAX_FILES {
                    return Err(BundleError::Archive(format!(
                        "over {MAX_FILES} files or {MAX_BUNDLE_BYTES} bytes"
                    )));
                }
                let data = std::fs::read(&path).map_err(|e| err(&path, e.to_string()))?;
                files.insert(rel, data);
            }
        }
        Bundle::from_files(files)
    }

    /// The canonical archive: the same files always give the same bytes.
    pub fn archive(&self) -> Vec<u8> {
        let mut out = ARCHIVE_MAGIC.to_vec();
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (p, data) in &self.files {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(&(data.len() as u64).to_be_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    /// Read a canonical archive (bounded by the same limits as a folder).
    pub fn from_archive(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let bad = |m: &str| BundleError::Archive(m.to_string());
        let mut rest = bytes
            .strip_prefix(ARCHIVE_MAGIC)
            .ok_or_else(|| bad("not a Lindi bundle archive"))?;
        let mut take = |n: usize| -> Result<&[u8], BundleError> {
            if rest.len() < n {
                return Err(bad("truncated"));
            }
            let (a, b) = rest.split_at(n);
            rest = b;
            Ok(a)
        };
        let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad("count"))?) as usize;
        if count > MAX_FILES {
            return Err(bad("too many files"));
        }
        let mut files = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..count {
            let n = u16::from_be_bytes(take(2)?.try_into().map_err(|_| bad("path"))?) as usize;
            let p = std::str::from_utf8(take(n)?)
                .map_err(|_| bad("a path is not UTF-8"))?
                .to_string();
            let len = u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad("length"))?);
            if len > MAX_FILE_BYTES {
                return Err(bad("a file is too large"));
            }
            let data = take(len as usize)?.to_vec();
            // Canonical: strictly sorted, so one content has one archive.
            if last.as_ref().is_some_and(|l| *l >= p) {
                return Err(bad("files out of order"));
            }
            last = Some(p.clone());
            files.insert(p, data);
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Bundle::from_files(files)
    }

    /// `name-version`, the bundle's file stem.
    pub fn id(&self) -> String {
        format!("{}-{}", self.manifest.name, self.manifest.version)
    }

    fn detector_files(&self, ext: &[&str]) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        let ext: Vec<String> = ext.iter().map(|e| format!(".{e}")).collect();
        self.files.iter().filter(move |(p, _)| {
            !p.starts_with("tests/") && ext.iter().any(|e| p.to_ascii_lowercase().ends_with(e))
        })
    }

    /// The Sigma rule files as (path, text); files that are not UTF-8 are left out (lint
    /// reports them).
    pub fn sigma_sources(&self) -> Vec<(String, String)> {
        self.detector_files(&["yml", "yaml"])
            .filter_map(|(p, d)| Some((p.clone(), String::from_utf8(d.clone()).ok()?)))
            .collect()
    }

    /// The indicator lists, one after the other.
    pub fn ioc_text(&self) -> String {
        let mut out = String::new();
        for (_, d) in self.detector_files(&["ioc"]) {
            out.push_str(&String::from_utf8_lossy(d));
            out.push('\n');
        }
        out
    }

    /// Load every detector with the engines the agent uses, reporting each problem.
    pub fn compile(&self) -> (Detectors, Vec<Problem>) {
        let mut problems = vec![];
        let text =
            |p: &String, d: &Vec<u8>, problems: &mut Vec<Problem>| match std::str::from_utf8(d) {
                Ok(t) => Some(t.to_string()),
                Err(_) => {
                    problems.push(Problem::new(p, None, "not UTF-8 text"));
                    None
                }
            };
        let mut rules = RuleSet::default();
        for (p, d) in self.detector_files(&["rules"]) {
            if let Some(t) = text(p, d, &mut problems) {
                rules.add(p, &t, &Default::default());
            }
        }
        for (source, line, why) in &rules.rejected {
            problems.push(Problem::new(source, Some(*line), &why.to_string()));
        }
        let mut sigma_sources = vec![];
        for (p, d) in self.detector_files(&["yml", "yaml"]) {
            if let Some(t) = text(p, d, &mut problems) {
                sigma_sources.push((p.clone(), t));
            }
        }
        let (sigma, report) = SigmaRules::load(&sigma_sources);
        for (source, why) in report.failed.iter().chain(&report.skipped) {
            problems.push(Problem::new(source, None, why));
        }
        // One set from every list (a bundle of a million indicators is one compiled set);
        // each file's first line in the whole, to name a bad line by its file.
        let mut iocs_text = String::new();
        let mut ioc_files: Vec<(&String, usize)> = vec![];
        let mut lines = 0;
        for (p, d) in self.detector_files(&["ioc"]) {
            let Ok(t) = std::str::from_utf8(d) else {
                problems.push(Problem::new(p, None, "not UTF-8 text"));
                continue;
            };
            ioc_files.push((p, lines));
            for line in t.lines() {
                iocs_text.push_str(line);
                iocs_text.push('\n');
                lines += 1;
            }
        }
        let iocs = IocSet::parse(&iocs_text);
        drop(iocs_text);
        for (line, why) in &iocs.rejected {
            let at = (*line as usize).saturating_sub(1);
            let i = ioc_files.partition_point(|(_, first)| *first <= at);
            let (file, first) = match i.checked_sub(1).and_then(|k| ioc_files.get(k)) {
                Some((f, first)) => (f.as_str(), *first),
                None => ("", 0),
            };
            problems.push(Problem::new(file, Some(at - first + 1), why));
        }
        let heuristics = self
            .manifest
            .heuristics
            .as_ref()
            .and_then(|h| h.to_config().ok().flatten());
        let counts = (rules.rules.len(), sigma.rule_count(), iocs.len());
        (
            Detectors {
                rules: rules.rules,
                sigma,
                iocs,
                heuristics,
                counts,
            },
            problems,
        )
    }

    /// The bundle's tests (`tests/NAME/test.toml`), with problems reading them.
    pub fn tests(&self) -> (Vec<TestCase>, Vec<Problem>) {
        let mut out = vec![];
        let mut problems = vec![];
        for (p, d) in &self.files {
            let Some(name) = p
                .strip_prefix("tests/")
                .and_then(|r| r.strip_suffix("/test.toml"))
            else {
                continue;
            };
            let parsed = std::str::from_utf8(d)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|t| toml::from_str::<TestSpec>(t).map_err(|e| e.to_string()));
            match parsed {
                Ok(spec) => {
                    let dir = format!("tests/{name}/");
                    for f in spec.pcap.iter() {
                        if !self.files.contains_key(&format!("{dir}{f}")) {
                            problems.push(Problem::new(p, None, &format!("no fixture {dir}{f}")));
                        }
                    }
                    if spec.expect.is_empty() && spec.expect_not.is_empty() {
                        problems.push(Problem::new(p, None, "expects nothing"));
                    }
                    out.push(TestCase {
                        name: name.to_string(),
                        dir,
                        spec,
                    });
                }
                Err(e) => problems.push(Problem::new(p, None, &e)),
            }
        }
        (out, problems)
    }

    /// Run one test with these detectors.
    pub fn run_test(&self, detectors: &Detectors, t: &TestCase) -> TestOutcome {
        let mut detections: Vec<DetectionEvent> = vec![];
        let mut errors = vec![];
        if let Some(f) = &t.spec.pcap {
            match self.files.get(&format!("{}{f}", t.dir)) {
                Some(bytes) => match detectors.replay(bytes) {
                    Ok(d) => detections.extend(d),
                    Err(e) => errors.push(format!("{f}: {e}")),
                },
                None => errors.push(format!("no fixture {}{f}", t.dir)),
            }
        }
        for (i, ev) in t.spec.events().enumerate() {
            let mut ev = ev;
            ev.event_id = format!("{}-{i}", t.name);
            detections.extend(detectors.sigma.evaluate(&ev));
        }
        let mut failures = errors;
        for e in &t.spec.expect {
            let n = detections.iter().filter(|d| e.matches(d)).count();
            match e.count {
                Some(want) if n != want => {
                    failures.push(format!("expected {want} of {e}, got {n}"))
                }
                None if n == 0 => failures.push(format!("expected {e}, got none")),
                _ => {}
            }
        }
        for e in &t.spec.expect_not {
            let n = detections.iter().filter(|d| e.matches(d)).count();
            if n > 0 {
                failures.push(format!("expected no {e}, got {n}"));
            }
        }
        TestOutcome {
            name: t.name.clone(),
            detections: detections.len(),
            failures,
        }
    }
}

/// A problem a lint finds: file, line where known, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    fn new(file: &str, line: Option<usize>, message: &str) -> Problem {
        Problem {
            file: file.to_string(),
            line,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A bundle's detectors, loaded.
pub struct Detectors {
    pub rules: Vec<crate::detect::Rule>,
    pub sigma: SigmaRules,
    pub iocs: IocSet,
    pub heuristics: Option<HeuristicConfig>,
    /// (network rules, Sigma rules, indicators) loaded.
    pub counts: (usize, usize, usize),
}

impl Detectors {
    /// Run a capture through the network pipeline with these detectors; its detections.
    pub fn replay(&self, pcap: &[u8]) -> Result<Vec<DetectionEvent>, String> {
        let mut file = PcapFile::parse(pcap)?;
        let mut p = Pipeline::new(FlowConfig::default());
        if !self.rules.is_empty() {
            p = p.with_rules(Engine::new(self.rules.clone()));
        }
        if !self.iocs.is_empty() {
            p = p.with_iocs(std::sync::Arc::new(self.iocs.clone()));
        }
        if let Some(h) = self.heuristics {
            p = p.with_heuristics(h);
        }
        let mut records = vec![];
        while let Some(frame) = file.next_frame() {
            let f = frame?;
            records.extend(p.packet(file.linktype, f.ts_ns, f.data));
        }
        records.extend(p.drain());
        Ok(records
            .iter()
            .filter(|r| matches!(r, NetRecord::Alert { .. }))
            .filter_map(|r| match r.kind() {
                event::Kind::Detection(d) => Some(d),
                _ => None,
            })
            .collect())
    }
}

/// `tests/NAME/test.toml`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    #[serde(default)]
    pub description: String,
    /// A classic pcap in the test's folder, run through the network pipeline.
    pub pcap: Option<String>,
    /// Host events, run through the Sigma rules.
    #[serde(default)]
    pub process: Vec<ProcessFixture>,
    #[serde(default)]
    pub file: Vec<FileFixture>,
    /// Detections that must happen.
    #[serde(default)]
    pub expect: Vec<Expectation>,
    /// Detections that must not.
    #[serde(default)]
    pub expect_not: Vec<Expectation>,
}

impl TestSpec {
    fn events(&self) -> impl Iterator<Item = Event> + '_ {
        self.process
            .iter()
            .map(ProcessFixture::event)
            .chain(self.file.iter().map(FileFixture::event))
    }
}

/// A process start.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessFixture {
    pub exe: String,
    pub cmdline: Vec<String>,
    pub parent_exe: String,
    pub parent_cmdline: String,
    pub cwd: String,
    pub user: String,
    pub pid: u32,
    pub ppid: u32,
}

impl ProcessFixture {
    fn event(&self) -> Event {
        Event {
            host_name: "fixture".into(),
            sensor: "process".into(),
            kind: Some(event::Kind::Process(ProcessEvent {
                action: ProcessAction::Start as i32,
                pid: self.pid,
                ppid: self.ppid,
                name: self.exe.rsplit('/').next().unwrap_or_default().into(),
                exe: self.exe.clone(),
                cmdline: self.cmdline.clone(),
                cwd: self.cwd.clone(),
                user: self.user.clone(),
                parent_exe: self.parent_exe.clone(),
                parent_cmdline: self.parent_cmdline.clone(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }
}

/// A file created or renamed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFixture {
    pub path: String,
    /// `created` (default) or `renamed`.
    #[serde(default)]
    pub action: Option<String>,
}

impl FileFixture {
    fn event(&self) -> Event {
        Event {
            host_name: "fixture".into(),
            sensor: "fim".into(),
            kind: Some(event::Kind::File(FileEvent {
                action: self.action.clone().unwrap_or_else(|| "created".into()),
                path: self.path.clone(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }
}

/// Which detections an expectation counts; every given field must match.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// `suricata`, `ioc`, `heuristic` or `sigma`.
    pub engine: Option<String>,
    /// `GID:SID` of a network rule (`1:2027865`), a Sigma rule's id.
    pub rule: Option<String>,
    /// A part of the title.
    pub title: Option<String>,
    /// Exactly this many (default: at least one).
    pub count: Option<usize>,
}

impl Expectation {
    fn matches(&self, d: &DetectionEvent) -> bool {
        self.engine.as_ref().is_none_or(|e| *e == d.engine)
            && self.rule.as_ref().is_none_or(|r| *r == d.rule_id)
            && self
                .title
                .as_ref()
                .is_none_or(|t| d.title.contains(t.as_str()))
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![];
        if let Some(e) = &self.engine {
            parts.push(format!("engine {e}"));
        }
        if let Some(r) = &self.rule {
            parts.push(format!("rule {r}"));
        }
        if let Some(t) = &self.title {
            parts.push(format!("title ~ {t:?}"));
        }
        if parts.is_empty() {
            parts.push("any detection".into());
        }
        f.write_str(&parts.join(", "))
    }
}

/// A test of a bundle.
#[derive(Clone, Debug, PartialEq)]
pub struct TestCase {
    pub name: String,
    /// `tests/NAME/`.
    pub dir: String,
    pub spec: TestSpec,
}

/// What a test run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    pub name: String,
    pub detections: usize,
    /// Empty: passed.
    pub failures: Vec<String>,
}

/// A public key agents and collectors trust: `ed25519:BASE64` (32 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn parse(s: &str) -> Result<PublicKey, BundleError> {
        use base64::Engine as _;
        let b64 = s
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| BundleError::Key("a public key is written ed25519:BASE64".into()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| BundleError::Key(format!("public key: {e}")))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| BundleError::Key("an ed25519 public key is 32 bytes".into()))?;
        Ok(PublicKey(key))
    }

    /// A short, stable name for the key: 16 hex digits of its SHA-256.
    pub fn id(&self) -> String {
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, &self.0).as_ref()[..8])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        write!(
            f,
            "ed25519:{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

const KEY_LABEL: &str = "LINDI BUNDLE SIGNING KEY";

/// A new signing key: (private key file text, its public key).
pub fn generate_key() -> Result<(String, PublicKey), BundleError> {
    use base64::Engine as _;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| BundleError::Key("the random number generator failed".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| BundleError::Key("generated key unreadable".into()))?;
    let public = PublicKey(
        pair.public_key()
            .as_ref()
            .try_into()
            .map_err(|_| BundleError::Key("public key size".into()))?,
    );
    let text = format!(
        "-----BEGIN {KEY_LABEL}-----\n{}\n-----END {KEY_LABEL}-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    Ok((text, public))
}

/// Read a key file `generate_key` wrote.
pub fn read_key(text: &str) -> Result<Ed25519KeyPair, BundleError> {
    use base64::Engine as _;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| BundleError::Key(format!("key file: {e}")))?;
    Ed25519KeyPair::from_pkcs8(&der).map_err(|_| BundleError::Key("not an ed25519 key".into()))
}

fn signed_message(archive: &[u8]) -> Vec<u8> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, archive).as_ref());
    m
}

/// The signed form of a bundle: magic, key id, signature, archive.
pub fn sign(bundle: &Bundle, key: &Ed25519KeyPair) -> Vec<u8> {
    let archive = bundle.archive();
    let sig = key.sign(&signed_message(&archive));
    let public = PublicKey(key.public_key().as_ref().try_into().unwrap_or([0; 32]));
    let mut out = SIGNED_MAGIC.to_vec();
    out.extend_from_slice(public.id().as_bytes());
    out.extend_from_slice(sig.as_ref());
    out.extend_from_slice(&archive);
    out
}

/// Check a signed bundle against trusted keys and read it.
pub fn verify(signed: &[u8], trusted: &[PublicKey]) -> Result<(Bundle, PublicKey), BundleError> {
    let Some(rest) = signed.strip_prefix(SIGNED_MAGIC) else {
        return if signed.starts_with(ARCHIVE_MAGIC) {
            Err(BundleError::Unsigned)
        } else {
            Err(BundleError::Archive("not a signed Lindi bundle".into()))
        };
    };
    if rest.len() < 16 + 64 {
        return Err(BundleError::Archive("truncated signature".into()));
    }
    let (id, rest) = rest.split_at(16);
    let (sig, archive) = rest.split_at(64);
    let id = std::str::from_utf8(id)
        .map_err(|_| BundleError::Archive("bad key id".into()))?
        .to_string();
    let key = trusted
        .iter()
        .find(|k| k.id() == id)
        .ok_or_else(|| BundleError::UnknownKey(id.clone()))?;
    UnparsedPublicKey::new(&ED25519, key.0)
        .verify(&signed_message(archive), sig)
        .map_err(|_| BundleError::BadSignature)?;
    Ok((Bundle::from_archive(archive)?, key.clone()))
}

/// What changed between two versions of a bundle, for people: files added, removed, changed,
/// and rules added and removed by id.
pub fn diff_summary(old: &Bundle, new: &Bundle) -> String {
    let mut added = vec![];
    let mut removed = vec![];
    let mut changed = vec![];
    for (p, d) in &new.files {
        match old.files.get(p) {
            None => added.push(p.as_str()),
            Some(o) if o != d => changed.push(p.as_str()),
            _ => {}
        }
    }
    for p in old.files.keys() {
        if !new.files.contains_key(p) {
            removed.push(p.as_str());
        }
    }
    let ids = |b: &Bundle| -> std::collections::BTreeSet<String> {
        let (d, _) = b.compile();
        d.rules
            .iter()
            .map(|r| format!("{}:{}", r.gid, r.sid))
            .chain(d.sigma.ids())
            .collect()
    };
    let (o, n) = (ids(old), ids(new));
    let rules_added = n.difference(&o).count();
    let rules_removed = o.difference(&n).count();
    let mut parts = vec![format!(
        "{} → {}",
        old.manifest.version, new.manifest.version
    )];
    for (what, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            parts.push(format!("{what} {}", list.join(", ")));
        }
    }
    parts.push(format!("rules +{rules_added} −{rules_removed}"));
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(extra: &[(&str, &str)]) -> Bundle {
        let mut files = BTreeMap::new();
        files.insert(
            "bundle.toml".to_string(),
            b"name = \"t\"\nversion = \"1.2.3\"\n".to_vec(),
        );
        for (p, d) in extra {
            files.insert(p.to_string(), d.as_bytes().to_vec());
        }
        Bundle::from_files(files).unwrap()
    }

    #[test]
    fn versions_order_as_semver() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("2.0.0-rc.1") < v("2.0.0"));
        assert_eq!(v("1.2.3+build.5").to_string(), "1.2.3");
        for bad in ["1.2", "01.2.3", "1.2.x", "", "1.2.3-bad pre"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn archives_are_canonical_and_checked() {
        let b = bundle(&[("rules/a.rules", "x"), ("iocs/b.ioc", "y")]);
        let a = b.archive();
        assert_eq!(Bundle::from_archive(&a).unwrap(), b);
        assert_eq!(
            bundle(&[("iocs/b.ioc", "y"), ("rules/a.rules", "x")]).archive(),
            a
        );
        assert!(
            Bundle::from_archive(&a[..a.len() - 1]).is_err(),
            "truncated"
        );
        let mut longer = a.clone();
        longer.push(0);
        assert!(Bundle::from_archive(&longer).is_err(), "trailing bytes");
        assert!(Bundle::from_archive(b"garbage").is_err());
        // A path that climbs out, or an absolute one, is refused.
        for p in ["../x", "/etc/passwd", "a//b", "a/./b"] {
            let mut files = b.files.clone();
            files.insert(p.to_string(), vec![]);
            assert!(Bundle::from_files(files).is_err(), "{p}");
        }
        // A manifest that is missing or wrong is refused.
        let mut files = b.files.clone();
        files.insert(
            "bundle.toml".into(),
            b"name = \"Bad Name\"\nversion = \"1.0.0\"\n".to_vec(),
        );
        assert!(Bundle::from_files(files).is_err());
    }

    #[test]
    fn signatures_cover_every_byte_and_name_their_key() {
        let b = bundle(&[("rules/a.rules", "x")]);
        let (text, public) = generate_key().unwrap();
        let key = read_key(&text).unwrap();
        let signed = sign(&b, &key);
        let (got, k) = verify(&signed, std::slice::from_ref(&public)).unwrap();
        assert_eq!((got, k), (b.clone(), public.clone()));
        assert_eq!(PublicKey::parse(&public.to_string()).unwrap(), public);
        let (_, stranger) = generate_key().unwrap();
        assert_eq!(
            verify(&signed, std::slice::from_ref(&stranger)),
            Err(BundleError::UnknownKey(public.id()))
        );
        for i in [SIGNED_MAGIC.len() + 20, signed.len() - 1] {
            let mut t = signed.clone();
            t[i] ^= 1;
            assert!(
                verify(&t, std::slice::from_ref(&public)).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(
            verify(&b.archive(), std::slice::from_ref(&public)),
            Err(BundleError::Unsigned)
        );
        assert!(PublicKey::parse("ed25519:AAAA").is_err());
    }

    #[test]
    fn the_diff_names_files_and_rules() {
        let old = bundle(&[(
            "rules/a.rules",
            "alert udp any any -> any 1 (msg:\"a\"; sid:1;)\n",
        )]);
        let mut files = old.files.clone();
        files.insert(
            "bundle.toml".into(),
            b"name = \"t\"\nversion = \"1.3.0\"\n".to_vec(),
        );
        files.insert(
            "rules/b.rules".into(),
            b"alert udp any any -> any 2 (msg:\"b\"; sid:2;)\n".to_vec(),
        );
        let new = Bundle::from_files(files).unwrap();
        let d = diff_summary(&old, &new);
        assert!(d.starts_with("1.2.3 → 1.3.0"), "{d}");
        assert!(
            d.contains("added rules/b.rules") && d.contains("rules +1 −0"),
            "{d}"
        );
    }
}
