//! Pending writes of a checkpoint, parsed by task: results, errors, interrupts, resumes.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::checkpoint::PendingWrite;
use crate::types::Interrupt;

#[derive(Default)]
pub(super) struct Pending {
    pub(super) done: HashMap<String, Vec<(String, Value)>>,
    pub(super) errors: HashMap<String, Value>,
    /// task id -> (n, interrupts) with the largest n
    pub(super) interrupts: HashMap<String, (usize, Vec<Interrupt>)>,
    /// task id -> resume values in order
    pub(super) resumes: HashMap<String, BTreeMap<usize, Value>>,
}

impl Pending {
    pub(super) fn parse(writes: &[PendingWrite]) -> Self {
        let mut p = Pending::default();
        for w in writes {
            let mut parts = w.task_id.splitn(3, '~');
            let id = parts.next().unwrap_or_default().to_string();
            let kind = parts.next();
            let n: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            match kind {
                None => p
                    .done
                    .entry(id)
                    .or_default()
                    .push((w.channel.clone(), w.value.clone())),
                Some("error") => {
                    p.errors.insert(id, w.value.clone());
                }
                Some("interrupt") => {
                    let list: Vec<Interrupt> =
                        serde_json::from_value(w.value.clone()).unwrap_or_default();
                    let replace = p.interrupts.get(&id).is_none_or(|(m, _)| n >= *m);
                    if replace {
                        p.interrupts.insert(id, (n, list));
                    }
                }
                Some("resume") => {
                    p.resumes.entry(id).or_default().insert(n, w.value.clone());
                }
                Some(_) => {}
            }
        }
        p
    }

    pub(super) fn resume_count(&self, id: &str) -> usize {
        self.resumes.get(id).map_or(0, BTreeMap::len)
    }

    /// Interrupts of `id` not answered yet.
    pub(super) fn open_interrupts(&self, id: &str) -> Vec<Interrupt> {
        match self.interrupts.get(id) {
            Some((n, list)) if *n >= self.resume_count(id) && !self.done.contains_key(id) => {
                list.clone()
            }
            _ => Vec::new(),
        }
    }

    pub(super) fn resume_values(&self, id: &str) -> Vec<Value> {
        self.resumes
            .get(id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
