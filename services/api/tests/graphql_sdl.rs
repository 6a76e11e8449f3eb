//! The committed GraphQL SDL (`schemas/graphql/schema.graphql`) is the schema clients
//! code against: this test fails when the schema changes without it. Run with
//! `UPDATE_SDL=1` to rewrite the file, then review the diff like any API change.

use std::path::PathBuf;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/graphql/schema.graphql")
}

#[test]
fn the_committed_sdl_matches_the_schema() {
    let sdl = distorch_api::graphql::sdl();
    let path = committed();
    if std::env::var_os("UPDATE_SDL").is_some() {
        std::fs::write(&path, &sdl).expect("write the SDL snapshot");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk == sdl {
        return;
    }
    let first_difference = on_disk
        .lines()
        .zip(sdl.lines())
        .enumerate()
        .find(|(_, (old, new))| old != new)
        .map(|(i, (old, new))| format!("line {}:\n  committed: {old}\n  schema:    {new}", i + 1))
        .unwrap_or_else(|| {
            format!(
                "one is a prefix of the other ({} vs {} lines)",
                on_disk.lines().count(),
                sdl.lines().count()
            )
        });
    panic!(
        "{} differs from the GraphQL schema; first difference at {first_difference}\n\
         If the change is intended, run `UPDATE_SDL=1 cargo test -p distorch-api --test graphql_sdl` \
         and commit the file.",
        path.display()
    );
}

#[test]
fn the_schema_offers_what_the_api_documents() {
    let sdl = distorch_api::graphql::sdl();
    for needle in [
        "workflow(id: ID!): Workflow",
        "workflows(filter: WorkflowsFilter, first: Int! = 50, after: String): WorkflowPage!",
        "workflowEvents(workflowId: ID!, afterSeq: Int! = 0): WorkflowEvent!",
        "taskUpdates(queue: String!): TaskUpdate!",
        "path: [PathStep!]!",
        "registerDefinition(",
    ] {
        assert!(sdl.contains(needle), "the schema lacks {needle:?}:\n{sdl}");
    }
}
