//! How the types the derives cannot describe appear in the API's schemas: the ids as strings
//! in OpenAPI (a UUID for a run) and as GraphQL's `ID` scalar, a `switch` branch as its name
//! (`cases[<i>]` or `default`), so clients see the same types whichever interface they use.

use crate::ids::{TaskId, WorkflowId};
use crate::path::Branch;

#[cfg(feature = "openapi")]
mod openapi {
    use super::{Branch, TaskId, WorkflowId};
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};

    impl utoipa::PartialSchema for WorkflowId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::Custom("uuid".into())))
                .description(Some(
                    "A run's id, a UUID: time-ordered when DisTorch chose it, derived from \
                     the idempotency key or the parent for such runs, or the caller's own.",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for WorkflowId {}

    impl utoipa::PartialSchema for TaskId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "A task's id: `<workflow id>.<n>`, the n-th task the run created.",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for TaskId {}

    impl utoipa::PartialSchema for Branch {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "The branch a `switch` took: `cases[<i>]` or `default`.",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for Branch {}
}

#[cfg(feature = "graphql")]
mod graphql {
    use super::{Branch, TaskId, WorkflowId};
    use async_graphql::parser::types::Field;
    use async_graphql::registry::Registry;
    use async_graphql::{ContextSelectionSet, ID, OutputType, Positioned, ServerResult, Value};
    use std::borrow::Cow;

    /// `$ty` is shown as the scalar `$as`, resolved to its `Display` form.
    macro_rules! shown_as {
        ($ty:ty, $as:ty) => {
            impl OutputType for $ty {
                fn type_name() -> Cow<'static, str> {
                    <$as as OutputType>::type_name()
                }

                fn create_type_info(registry: &mut Registry) -> String {
                    <$as as OutputType>::create_type_info(registry)
                }

                async fn resolve(
                    &self,
                    _ctx: &ContextSelectionSet<'_>,
                    _field: &Positioned<Field>,
                ) -> ServerResult<Value> {
                    Ok(Value::String(self.to_string()))
                }
            }
        };
    }

    shown_as!(WorkflowId, ID);
    shown_as!(TaskId, ID);
    shown_as!(Branch, String);
}
