//! Registered definitions, compiled, by name and version. Fed from the definitions topic.

use distorch_domain::CommandId;
use distorch_domain::definition::Definition;
use distorch_domain::event::DefinitionRegistered;
use distorch_domain::workflow::DefinitionSource;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub struct Registry {
    by_name: HashMap<String, BTreeMap<u32, Arc<Definition>>>,
    /// Registration commands already applied, with the version they produced.
    applied: HashMap<CommandId, (String, u32)>,
}

impl Registry {
    /// Adds a registered version. A record that no longer compiles (it did when it was
    /// registered) is reported and skipped rather than stopping the engine.
    pub fn add(&mut self, reg: &DefinitionRegistered) {
        match Definition::from_source(&reg.source, reg.version) {
            Ok(def) => {
                self.by_name
                    .entry(reg.name.clone())
                    .or_default()
                    .insert(reg.version, Arc::new(def));
                if let Some(id) = &reg.command_id {
                    self.applied
                        .insert(id.clone(), (reg.name.clone(), reg.version));
                }
            }
            Err(e) => tracing::error!(name = %reg.name, version = reg.version, error = %e,
                "a registered definition no longer compiles; runs on it cannot start"),
        }
    }

    pub fn next_version(&self, name: &str) -> u32 {
        self.by_name
            .get(name)
            .and_then(|v| v.keys().next_back())
            .map_or(1, |v| v + 1)
    }

    pub fn applied(&self, id: &CommandId) -> Option<&(String, u32)> {
        self.applied.get(id)
    }
}

impl DefinitionSource for Registry {
    fn definition(&self, name: &str, version: Option<u32>) -> Option<Arc<Definition>> {
        let versions = self.by_name.get(name)?;
        match version {
            Some(v) => versions.get(&v).cloned(),
            None => versions.values().next_back().cloned(),
        }
    }
}
