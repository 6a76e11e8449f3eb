//! The JSON document jq expressions see: `.input`, `.steps.<id>.output`, and inside a
//! `foreach` iteration `.item`, `.index` (and the iteration's own step outputs).

use super::state::{StepStatus, Workflow};
use serde_json::{Map, Value, json};

/// The enclosing `foreach` iterations of a step, outermost first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// (key prefix of the iteration, e.g. `pack[2].`, item, index)
    pub iterations: Vec<(String, Value, usize)>,
}

impl Scope {
    pub fn enter(&self, prefix: String, item: Value, index: usize) -> Scope {
        let mut iterations = self.iterations.clone();
        iterations.push((prefix, item, index));
        Scope { iterations }
    }

    /// The scope a step key lives in, recovered from the key itself
    /// (`a[1].b[0].c` is inside iteration 1 of `a` and iteration 0 of `a[1].b`).
    pub fn of_key(wf: &Workflow, key: &str) -> Scope {
        let mut scope = Scope::default();
        let mut consumed = 0;
        while let Some(open) = key[consumed..].find('[') {
            let open = consumed + open;
            let Some(close) = key[open..].find("].").map(|c| open + c) else {
                break;
            };
            let foreach_key = &key[..open];
            let Ok(index) = key[open + 1..close].parse::<usize>() else {
                break;
            };
            let item = wf
                .steps
                .get(foreach_key)
                .and_then(|s| s.items.as_ref())
                .and_then(|items| items.get(index))
                .cloned()
                .unwrap_or(Value::Null);
            scope = scope.enter(key[..close + 2].to_string(), item, index);
            consumed = close + 2;
        }
        scope
    }
}

pub(crate) fn build(wf: &Workflow, scope: &Scope) -> Value {
    let mut steps = Map::new();
    let visible = |rest: &str| !rest.contains('[');
    for (key, s) in &wf.steps {
        if s.status != StepStatus::Completed || !visible(key) {
            continue;
        }
        steps.insert(key.clone(), json!({ "output": s.output }));
    }
    for (prefix, _, _) in &scope.iterations {
        for (key, s) in &wf.steps {
            if s.status != StepStatus::Completed {
                continue;
            }
            if let Some(rest) = key.strip_prefix(prefix.as_str())
                && visible(rest)
            {
                steps.insert(rest.to_string(), json!({ "output": s.output }));
            }
        }
    }
    let mut ctx = Map::new();
    ctx.insert("input".into(), wf.input.clone());
    ctx.insert("steps".into(), Value::Object(steps));
    ctx.insert("workflow_id".into(), Value::String(wf.id.to_string()));
    let signals: Map<String, Value> = wf
        .signals
        .iter()
        .filter_map(|(name, payloads)| Some((name.clone(), payloads.last()?.clone())))
        .collect();
    ctx.insert("signals".into(), Value::Object(signals));
    if let Some((_, item, index)) = scope.iterations.last() {
        ctx.insert("item".into(), item.clone());
        ctx.insert("index".into(), json!(index));
    }
    Value::Object(ctx)
}
