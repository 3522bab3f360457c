//! Detection bundles on the agent: what the collector sends is checked against the keys in
//! the agent's own configuration (a compromised collector cannot make an agent run anything
//! else), compiled with the same engines `lindi detectors test` uses, kept on disk for the
//! next start, and swapped into the running sensors at once: the network sensor's capture
//! threads pick the new set up between two packets, the Sigma runtime before the next event.
//! Nothing restarts and no packet or event is dropped for it.
//!
//! The version that ran before each running bundle is kept on disk, so a rollback to it needs
//! no bytes on the wire: it is read back, checked again and swapped in. Only the compiled
//! detectors of running bundles stay in memory, not their signed bytes.
//!
//! A bundle that fails (bad signature, unknown key, too new for this agent, a rule that does
//! not load) is refused on its own: the version running before stays, and the reason is
//! reported in the health events (`bundle_error`) with the versions that do run (`bundles`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use lindi_shared::bundle::{self, PublicKey, Version};
use lindi_shared::detect::Rule;
use lindi_shared::detect::heuristics::HeuristicConfig;
use lindi_shared::detect::ioc::IocSet;
use lindi_shared::proto::{BundleRef, BundleUpdate};
use lindi_shared::sigma::SigmaRules;

/// What the network sensor runs.
#[derive(Clone, Default)]
pub struct NetDetectors {
    pub rules: Arc<Vec<Rule>>,
    pub iocs: Option<Arc<IocSet>>,
    pub heuristics: Option<HeuristicConfig>,
}

/// The detectors in force, shared by the sensors and the bundle manager.
pub struct Live {
    generation: AtomicU64,
    net: RwLock<Arc<NetDetectors>>,
    sigma: RwLock<Arc<SigmaRules>>,
    status: Mutex<(Vec<String>, String)>,
}

impl Live {
    pub fn new(net: NetDetectors, sigma: SigmaRules) -> Arc<Live> {
        Arc::new(Live {
            generation: AtomicU64::new(0),
            net: RwLock::new(Arc::new(net)),
            sigma: RwLock::new(Arc::new(sigma)),
            status: Mutex::new((vec![], String::new())),
        })
    }

    /// Bumped on every swap; the capture threads compare it per packet.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn net(&self) -> Arc<NetDetectors> {
        self.net.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn sigma(&self) -> Arc<SigmaRules> {
        self.sigma.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// (running bundles as `name@version`, the last update's error or empty).
    pub fn status(&self) -> (Vec<String>, String) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn swap(&self, net: NetDetectors, sigma: SigmaRules) {
        *self.net.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(net);
        *self.sigma.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(sigma);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn set_status(&self, active: Vec<String>, error: String) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = (active, error);
    }
}

/// What the agent's own configuration loads, under every bundle.
#[derive(Clone, Default)]
pub struct Base {
    pub rules: Vec<Rule>,
    pub iocs: IocSet,
    pub heuristics: Option<HeuristicConfig>,
    pub sigma_sources: Vec<(String, String)>,
}

/// A running bundle, compiled. Its signed bytes are on disk, not in memory: an indicator
/// bundle of a million lines is tens of megabytes that the compiled set does not need.
struct Loaded {
    version: String,
    rules: Vec<Rule>,
    iocs: IocSet,
    sigma_sources: Vec<(String, String)>,
    heuristics: Option<HeuristicConfig>,
}

/// Receives bundle updates and keeps [`Live`] in step.
pub struct BundleManager {
    live: Arc<Live>,
    base: Base,
    keys: Vec<PublicKey>,
    dir: PathBuf,
    loaded: BTreeMap<String, Loaded>,
    /// The version that ran before, per bundle name: its signed bytes are on disk
    /// (`NAME.previous.bundle`), checked again when it is rolled back to.
    previous: BTreeMap<String, String>,
}

const RUNNING_SUFFIX: &str = ".bundle";
const PREVIOUS_SUFFIX: &str = ".previous.bundle";

impl BundleManager {
    /// A manager over `dir` (`STATE_DIR/bundles`), with the bundles saved there loaded again
    /// (each checked as if it had just arrived).
    pub fn open(live: Arc<Live>, base: Base, keys: Vec<PublicKey>, dir: PathBuf) -> BundleManager {
        let mut m = BundleManager {
            live,
            base,
            keys,
            dir,
            loaded: BTreeMap::new(),
            previous: BTreeMap::new(),
        };
        let mut errors = vec![];
        if let Ok(entries) = std::fs::read_dir(&m.dir) {
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "bundle"))
                .collect();
            paths.sort();
            for p in paths {
                let file = p
                    .file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or_default()
                    .to_string();
                let read = std::fs::read(&p).map_err(|e| e.to_string());
                if let Some(name) = file.strip_suffix(PREVIOUS_SUFFIX) {
                    // Kept, not run: its signature is checked now, the rest on rollback.
                    match read.and_then(|signed| {
                        bundle::verify(&signed, &m.keys).map_err(|e| e.to_string())
                    }) {
                        Ok((b, _)) if b.manifest.name == name => {
                            m.previous.insert(name.to_string(), b.manifest.version);
                        }
                        Ok((b, _)) => errors.push(format!(
                            "{}: holds {}, not {name}",
                            p.display(),
                            b.manifest.name
                        )),
                        Err(e) => errors.push(format!("{}: {e}", p.display())),
                    }
                } else if let Some(name) = file.strip_suffix(RUNNING_SUFFIX) {
                    match read.and_then(|signed| m.check(&signed, None)) {
                        Ok((n, l)) if n == name => {
                            m.loaded.insert(n, l);
                        }
                        Ok((n, _)) => {
                            errors.push(format!("{}: holds {n}, not {name}", p.display()))
                        }
                        Err(e) => errors.push(format!("{}: {e}", p.display())),
                    }
                }
            }
        }
        m.rebuild(errors.join("; "));
        m
    }

    /// What the agent runs, for the collector.
    pub fn active(&self) -> Vec<BundleRef> {
        self.loaded
            .iter()
            .map(|(name, l)| BundleRef {
                name: name.clone(),
                version: l.version.clone(),
            })
            .collect()
    }

    /// What the agent keeps without running it, for the collector.
    pub fn kept(&self) -> Vec<BundleRef> {
        self.previous
            .iter()
            .map(|(name, version)| BundleRef {
                name: name.clone(),
                version: version.clone(),
            })
            .collect()
    }

    /// Verify, compile and check one signed bundle (expected to be `want` = (name,
    /// version)): its name and what it loads.
    fn check(&self, signed: &[u8], want: Option<(&str, &str)>) -> Result<(String, Loaded), String> {
        let (bundle, _key) = bundle::verify(signed, &self.keys).map_err(|e| e.to_string())?;
        let m = &bundle.manifest;
        if let Some((name, version)) = want
            && (m.name != name || m.version != version)
        {
            return Err(format!(
                "the collector announced {name} {version} but sent {} {}",
                m.name, m.version
            ));
        }
        if let Some(min) = &m.min_agent_version {
            let ours = Version::parse(lindi_shared::VERSION).ok();
            if Version::parse(min).ok() > ours {
                return Err(format!(
                    "{} {} needs agent {min} or later (this is {})",
                    m.name,
                    m.version,
                    lindi_shared::VERSION
                ));
            }
        }
        let (detectors, problems) = bundle.compile();
        if let Some(p) = problems.first() {
            return Err(format!(
                "{} {}: {} problems, first {p}",
                m.name,
                m.version,
                problems.len()
            ));
        }
        Ok((
            m.name.clone(),
            Loaded {
                version: m.version.clone(),
                rules: detectors.rules,
                iocs: detectors.iocs,
                sigma_sources: bundle.sigma_sources(),
                heuristics: m
                    .heuristics
                    .as_ref()
                    .and_then(|h| h.to_config().ok().flatten()),
            },
        ))
    }

    fn path(&self, name: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{name}{suffix}"))
    }

    /// The running version of `name` becomes the one kept (on disk).
    fn demote(&mut self, name: &str, version: String, errors: &mut Vec<String>) {
        if let Err(e) = std::fs::rename(
            self.path(name, RUNNING_SUFFIX),
            self.path(name, PREVIOUS_SUFFIX),
        ) {
            errors.push(format!("cannot keep {name} {version} on disk: {e}"));
        }
        self.previous.insert(name.to_string(), version);
    }

    /// Keep `signed` on disk as the running version of `name`.
    fn write_running(&self, name: &str, signed: &[u8]) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, signed)
            .and_then(|()| std::fs::rename(&tmp, self.path(name, RUNNING_SUFFIX)))
            .map_err(|e| format!("cannot keep {name} on disk: {e}"))
    }

    /// Roll `name` back to the version kept on disk: it is checked again, and the running
    /// one (if any) becomes the kept one.
    fn roll_back(
        &mut self,
        name: &str,
        version: &str,
        running: &mut Option<Loaded>,
    ) -> Result<Loaded, String> {
        let kept = self.path(name, PREVIOUS_SUFFIX);
        let checked = std::fs::read(&kept)
            .map_err(|e| format!("{}: {e}", kept.display()))
            .and_then(|signed| self.check(&signed, Some((name, version))));
        let (_, l) = checked?;
        let swapped = match running {
            Some(_) => {
                let tmp = self.dir.join(format!(".{name}.swap"));
                std::fs::rename(self.path(name, RUNNING_SUFFIX), &tmp)
                    .and_then(|()| std::fs::rename(&kept, self.path(name, RUNNING_SUFFIX)))
                    .and_then(|()| std::fs::rename(&tmp, &kept))
            }
            None => std::fs::rename(&kept, self.path(name, RUNNING_SUFFIX)),
        };
        swapped.map_err(|e| format!("cannot swap {name} on disk: {e}"))?;
        match running.take() {
            Some(r) => self.previous.insert(name.to_string(), r.version),
            None => self.previous.remove(name),
        };
        Ok(l)
    }

    /// Apply an update: load what is new, unload what is gone, keep what failed as it was.
    /// Returns whether the running set changed.
    pub fn apply(&mut self, update: &BundleUpdate) -> bool {
        let mut errors = vec![];
        let mut next: BTreeMap<String, Loaded> = BTreeMap::new();
        let mut changed = false;
        for e in &update.bundles {
            let running = self.loaded.remove(&e.name);
            if e.signed.is_empty() {
                if running.as_ref().is_some_and(|r| r.version == e.version) {
                    if let Some(r) = running {
                        next.insert(e.name.clone(), r);
                    }
                    continue;
                }
                if self.previous.get(&e.name) != Some(&e.version) {
                    errors.push(format!(
                        "{} {}: announced as kept here, but it is not",
                        e.name, e.version
                    ));
                    if let Some(r) = running {
                        next.insert(e.name.clone(), r);
                    }
                    continue;
                }
                // A rollback to the version kept: no bytes on the wire.
                let mut running = running;
                match self.roll_back(&e.name, &e.version, &mut running) {
                    Ok(l) => {
                        next.insert(e.name.clone(), l);
                        changed = true;
                    }
                    Err(why) => {
                        errors.push(why);
                        if let Some(r) = running {
                            next.insert(e.name.clone(), r);
                        }
                    }
                }
                continue;
            }
            match self.check(&e.signed, Some((&e.name, &e.version))) {
                Ok((_, l)) => {
                    if let Some(r) = running {
                        self.demote(&e.name, r.version, &mut errors);
                    }
                    if let Err(why) = self.write_running(&e.name, &e.signed) {
                        errors.push(why);
                    }
                    next.insert(e.name.clone(), l);
                    changed = true;
                }
                Err(why) => {
                    errors.push(why);
                    // The version that ran before goes on running.
                    if let Some(r) = running {
                        next.insert(e.name.clone(), r);
                    }
                }
            }
        }
        // What the collector no longer lists is unloaded (and kept, as the version before).
        for (name, l) in std::mem::replace(&mut self.loaded, next) {
            self.demote(&name, l.version, &mut errors);
            changed = true;
        }
        if changed {
            self.prune();
        }
        self.rebuild(errors.join("; "));
        changed
    }

    /// Remove bundle files on disk that are neither running nor kept.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let wanted = match file.strip_suffix(PREVIOUS_SUFFIX) {
                Some(name) => self.previous.contains_key(name),
                None => file
                    .strip_suffix(RUNNING_SUFFIX)
                    .is_some_and(|name| self.loaded.contains_key(name)),
            };
            if file.ends_with(".bundle") && !wanted {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Merge the base and every running bundle into one set and swap it in.
    fn rebuild(&self, error: String) {
        let mut rules = self.base.rules.clone();
        let mut heuristics = self.base.heuristics;
        let mut sigma_sources = self.base.sigma_sources.clone();
        for l in self.loaded.values() {
            rules.extend(l.rules.iter().cloned());
            sigma_sources.extend(l.sigma_sources.iter().cloned());
            if l.heuristics.is_some() {
                heuristics = l.heuristics;
            }
        }
        let iocs = IocSet::union(
            std::iter::once(&self.base.iocs).chain(self.loaded.values().map(|l| &l.iocs)),
        );
        let (sigma, _) = SigmaRules::load(&sigma_sources);
        self.live.swap(
            NetDetectors {
                rules: Arc::new(rules),
                iocs: (!iocs.is_empty()).then(|| Arc::new(iocs)),
                heuristics,
            },
            sigma,
        );
        // What compiling freed (a large indicator bundle's text, its archive) goes back
        // to the system rather than staying in the allocator's free lists.
        // SAFETY: malloc_trim only releases free memory; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
        let active = self
            .loaded
            .iter()
            .map(|(name, l)| format!("{name}@{}", l.version))
            .collect();
        if !error.is_empty() {
            tracing::warn!("detection bundles: {error}");
        }
        self.live.set_status(active, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lindi_shared::bundle::Bundle;
    use lindi_shared::proto::BundleEntry;

    fn bundle(version: &str, min_agent: &str) -> Bundle {
        let mut files = BTreeMap::new();
        files.insert(
            "bundle.toml".to_string(),
            format!("name = \"b\"\nversion = \"{version}\"\nmin_agent_version = \"{min_agent}\"\n")
                .into_bytes(),
        );
        files.insert(
            "rules/r.rules".to_string(),
            b"alert udp any any -> any 9 (msg:\"r\"; sid:1;)\n".to_vec(),
        );
        Bundle::from_files(files).unwrap()
    }

    fn entry(b: &Bundle, signed: Vec<u8>) -> BundleEntry {
        BundleEntry {
            name: b.manifest.name.clone(),
            version: b.manifest.version.clone(),
            signed,
        }
    }

    #[test]
    fn updates_load_refuse_unload_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (text, public) = bundle::generate_key().unwrap();
        let key = bundle::read_key(&text).unwrap();
        let open = || {
            let live = Live::new(NetDetectors::default(), SigmaRules::load(&[]).0);
            let m = BundleManager::open(
                live.clone(),
                Base::default(),
                vec![public.clone()],
                dir.path().join("bundles"),
            );
            (live, m)
        };
        let (live, mut m) = open();
        let g0 = live.generation();
        let v1 = bundle("1.0.0", "0.0.1");
        let update = |e| BundleUpdate { bundles: vec![e] };
        assert!(m.apply(&update(entry(&v1, bundle::sign(&v1, &key)))));
        assert!(live.generation() > g0);
        assert_eq!(live.net().rules.len(), 1);
        assert_eq!(live.status(), (vec!["b@1.0.0".to_string()], String::new()));

        // Changed after signing: refused, 1.0.0 stays.
        let v2 = bundle("2.0.0", "0.0.1");
        let mut bad = bundle::sign(&v2, &key);
        let n = bad.len();
        bad[n - 2] ^= 1;
        assert!(!m.apply(&update(entry(&v2, bad))));
        let (active, error) = live.status();
        assert_eq!(active, ["b@1.0.0"]);
        assert!(error.contains("does not match"), "{error}");
        // Too new for this agent: refused the same way.
        let v3 = bundle("3.0.0", "99.0.0");
        assert!(!m.apply(&update(entry(&v3, bundle::sign(&v3, &key)))));
        assert!(live.status().1.contains("needs agent 99.0.0"));
        // The collector says what runs; the signed bytes are not sent again.
        assert!(!m.apply(&update(entry(&v1, vec![]))));
        assert_eq!(live.status(), (vec!["b@1.0.0".to_string()], String::new()));

        // A restart loads what was running from disk, checked again.
        drop(m);
        let (live, mut m) = open();
        assert_eq!(live.status().0, ["b@1.0.0"]);
        assert_eq!(m.active().len(), 1);
        // 2.0.0 arrives; 1.0.0 is kept, and a rollback to it needs no bytes.
        let v2 = bundle("2.0.0", "0.0.1");
        assert!(m.apply(&update(entry(&v2, bundle::sign(&v2, &key)))));
        assert_eq!(live.status().0, ["b@2.0.0"]);
        assert_eq!(m.kept()[0].version, "1.0.0");
        assert!(m.apply(&update(entry(&v1, vec![]))));
        assert_eq!(live.status(), (vec!["b@1.0.0".to_string()], String::new()));
        assert_eq!(m.kept()[0].version, "2.0.0");
        // A version neither run nor kept cannot come without its bytes.
        let v9 = bundle("9.0.0", "0.0.1");
        assert!(!m.apply(&update(entry(&v9, vec![]))));
        assert!(live.status().1.contains("not"), "{:?}", live.status());
        // Not listed any more: unloaded, kept as the version before, and only that on disk.
        assert!(m.apply(&BundleUpdate { bundles: vec![] }));
        assert!(live.status().0.is_empty() && live.net().rules.is_empty());
        assert!(!dir.path().join("bundles/b.bundle").exists());
        assert!(dir.path().join("bundles/b.previous.bundle").exists());
        // The kept version is checked again when it comes back: changed on disk, refused.
        let kept = dir.path().join("bundles/b.previous.bundle");
        let mut bytes = std::fs::read(&kept).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        std::fs::write(&kept, bytes).unwrap();
        assert!(!m.apply(&update(entry(&v1, vec![]))));
        assert!(live.status().0.is_empty());
        assert!(
            live.status().1.contains("does not match"),
            "{:?}",
            live.status()
        );
    }
}
