#![warn(missing_docs)]
//! The pure model of DisTorch: ids, workflow definitions (parsing, validation, compiled
//! jq expressions), commands, events, and the workflow state machine
//! (`workflow::decide` / `workflow::evolve`).
//!
//! This crate MUST NOT depend on tokio, on any I/O crate, or on a web framework. Time and
//! randomness are inputs (the `now_ms` passed to `decide`, the UUID of a new run), never
//! read from the system, so every decision can be replayed and tested as given/when/then.
//!
//! The read models ([`view`]) and the types they hold derive their OpenAPI schema with the
//! `openapi` feature and their GraphQL types with `graphql`, so the API serves them as they
//! are and a field is added in one place; only the API enables the features.
//!
//! Entry points: [`definition::Definition::from_source`], [`workflow::decide`],
//! [`workflow::evolve`].

pub mod command;
pub mod definition;
pub mod event;
pub mod expr;
pub mod ids;
pub mod path;
#[cfg(any(feature = "openapi", feature = "graphql"))]
mod schema;
pub mod topics;
pub mod view;
pub mod workflow;

pub use command::{Command, CommandEnvelope};
pub use event::{Event, EventEnvelope};
pub use ids::{CommandId, TaskId, WorkflowId};
