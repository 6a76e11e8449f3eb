//! The wire schemas under `schemas/` (commands, events, task dispatches, replies, registered
//! definitions), compiled once per test binary. Used by `schemas.rs` and by the workflow
//! harness, which checks every command the engine accepts and every event it emits.
//!
//! Two sets: `published()` is the files as clients get them; `closed()` additionally rejects
//! any field a schema does not name. The event-side schemas are open on purpose (readers must
//! tolerate fields added later), so only the closed set notices a field the code writes and
//! the schema forgot: what the code writes is checked against `closed()`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use distorch_domain::command::{CommandEnvelope, Reply};
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_domain::topics::TaskDispatch;
use jsonschema::{Registry, Validator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What a record on one of DisTorch's topics holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Command,
    Event,
    TaskDispatch,
    Reply,
    DefinitionRegistered,
}

impl Wire {
    pub const ALL: [Wire; 5] = [
        Wire::Command,
        Wire::Event,
        Wire::TaskDispatch,
        Wire::Reply,
        Wire::DefinitionRegistered,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Wire::Command => "commands.schema.json",
            Wire::Event => "events.schema.json",
            Wire::TaskDispatch => "task-dispatch.schema.json",
            Wire::Reply => "reply.schema.json",
            Wire::DefinitionRegistered => "definition-registered.schema.json",
        }
    }

    /// Decodes `value` as this wire's Rust type and encodes it again.
    pub fn round_trip(self, value: &Value) -> Result<Value, String> {
        fn via<T: Serialize + DeserializeOwned>(value: &Value) -> Result<Value, String> {
            let decoded: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(&decoded).expect("a decoded value encodes"))
        }
        match self {
            Wire::Command => via::<CommandEnvelope>(value),
            Wire::Event => via::<EventEnvelope>(value),
            Wire::TaskDispatch => via::<TaskDispatch>(value),
            Wire::Reply => via::<Reply>(value),
            Wire::DefinitionRegistered => via::<DefinitionRegistered>(value),
        }
    }
}

pub fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

pub fn read_json(relative: &str) -> Value {
    let path = schemas_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct Schemas {
    validators: Vec<Validator>,
}

impl Schemas {
    pub fn get(&self, wire: Wire) -> &Validator {
        &self.validators[Wire::ALL.iter().position(|w| *w == wire).expect("listed")]
    }

    /// Every error, as `<instance path>: <message>`.
    pub fn errors(&self, wire: Wire, instance: &Value) -> Vec<String> {
        self.get(wire)
            .iter_errors(instance)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() { "/".into() } else { path };
                format!("{path}: {e}")
            })
            .collect()
    }
}

/// The schemas as published.
pub fn published() -> &'static Schemas {
    static SET: OnceLock<Schemas> = OnceLock::new();
    SET.get_or_init(|| compile(false))
}

/// The schemas with every object closed (see the module docs).
pub fn closed() -> &'static Schemas {
    static SET: OnceLock<Schemas> = OnceLock::new();
    SET.get_or_init(|| compile(true))
}

fn compile(closed: bool) -> Schemas {
    let load = |file: &str| {
        let mut schema = read_json(file);
        if closed {
            close(&mut schema);
        }
        schema
    };
    let uri = |file: &str| format!("https://distorch.dev/schemas/{file}");
    let registry = Registry::new()
        .add(uri("common.schema.json"), load("common.schema.json"))
        .and_then(|r| {
            r.add(
                uri("definition.schema.json"),
                read_json("definition.schema.json"),
            )
        })
        .and_then(|r| r.prepare())
        .expect("the shared schemas register");
    let validators = Wire::ALL
        .iter()
        .map(|wire| {
            jsonschema::options()
                .with_registry(&registry)
                .build(&load(wire.file()))
                .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", wire.file()))
        })
        .collect();
    Schemas { validators }
}

/// Adds `unevaluatedProperties: false` to the root and to every `$defs` entry declaring
/// `"type": "object"`, unless it already says what to do with other properties. The entries
/// describing one variant's fields (`$defs/<type>`, applied through the root's `if`/`then`)
/// declare no `type`, so they are closed by the root, which sees the envelope's fields too.
fn close(schema: &mut Value) {
    fn close_one(object: &mut serde_json::Map<String, Value>) {
        if !object.contains_key("additionalProperties")
            && !object.contains_key("unevaluatedProperties")
        {
            object.insert("unevaluatedProperties".into(), Value::Bool(false));
        }
    }
    let root = schema.as_object_mut().expect("a schema is an object");
    if root.contains_key("type") {
        close_one(root);
    }
    if let Some(Value::Object(defs)) = root.get_mut("$defs") {
        for def in defs.values_mut().filter_map(Value::as_object_mut) {
            if def.get("type") == Some(&Value::from("object")) {
                close_one(def);
            }
        }
    }
}

/// Checks something the code wrote: it validates against the closed schema of `wire`, and
/// decoding it gives back the same value.
pub fn check_written<T: Serialize>(wire: Wire, value: &T) {
    let json = serde_json::to_value(value).expect("encodes");
    let errors = closed().errors(wire, &json);
    assert!(
        errors.is_empty(),
        "{wire:?} written by the code does not match {}:\n  {}\n{json:#}",
        wire.file(),
        errors.join("\n  ")
    );
    match wire.round_trip(&json) {
        Ok(again) => assert_eq!(
            again, json,
            "{wire:?} changes when decoded and encoded again"
        ),
        Err(e) => panic!("{wire:?} written by the code does not decode: {e}\n{json:#}"),
    }
}
