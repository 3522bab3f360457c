//! How much of the ET Open ruleset in `../shared/corpus/rules/` the engine loads, and why the
//! rest does not. Skips with a message when the corpus is absent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lindi_shared::detect::{Engine, RuleSet, Vars};

#[test]
fn et_open_loads_at_least_two_thirds() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/rules/et-open.rules");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "SKIP: {} is absent (the shared corpus is not beside this clone)",
            path.display()
        );
        return;
    };
    let mut rs = RuleSet::default();
    rs.add("et-open.rules", &text, &Vars::default());
    let loaded = rs.rules.len();
    let total = loaded + rs.rejected.len();
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, e) in &rs.rejected {
        *why.entry(e.keyword.clone()).or_default() += 1;
    }
    let mut why: Vec<(String, usize)> = why.into_iter().collect();
    why.sort_by_key(|w| std::cmp::Reverse(w.1));
    eprintln!(
        "ET Open: {loaded} of {total} rules load ({:.1}%)",
        100.0 * loaded as f64 / total as f64
    );
    for (k, n) in why.iter().take(25) {
        eprintln!("  {n:6}  {k}");
    }
    let engine = Engine::new(rs.rules);
    assert_eq!(engine.rules().len(), loaded);
    assert!(
        loaded * 100 >= total * 67,
        "goal: at least 67% of ET Open loads"
    );
}
