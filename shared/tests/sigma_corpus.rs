//! SigmaHQ's Linux rules (`../shared/corpus/sigma/rules/linux`, beside the repository): how
//! many of the process_creation and file_event rules load, and why the rest do not. Skips with
//! a message where the corpus is absent (a fresh clone has no `../shared`).

use std::path::{Path, PathBuf};

use lindi_shared::sigma::SigmaRules;

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sigma/rules/linux");
    p.is_dir().then_some(p)
}

fn yaml_files(dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
}

#[test]
fn sigmahq_linux_rules_load() {
    let Some(dir) = corpus() else {
        eprintln!("skipping: ../shared/corpus/sigma is not beside this repository");
        return;
    };
    let mut sources = vec![];
    yaml_files(&dir, &mut sources);
    assert!(sources.len() >= 200, "expected the 210 SigmaHQ Linux rules");
    let (rules, report) = SigmaRules::load(&sources);
    let applicable = report.loaded.len() + report.failed.len();
    eprintln!(
        "SigmaHQ Linux rules: {} files; process_creation + file_event: {} of {} load ({:.1}%); {} skipped (other log sources)",
        sources.len(),
        report.loaded.len(),
        applicable,
        report.coverage() * 100.0,
        report.skipped.len()
    );
    for (file, why) in &report.failed {
        eprintln!("  failed: {file}: {why}");
    }
    assert_eq!(rules.rule_count(), report.loaded.len());
    assert_eq!(
        applicable, 130,
        "122 process_creation + 8 file_event rules apply"
    );
    assert!(
        report.coverage() >= 0.95,
        "coverage {:.3}",
        report.coverage()
    );
}
