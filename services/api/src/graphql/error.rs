//! GraphQL errors: the API's error with a clear message and `extensions.code` (plus the
//! HTTP `status` REST would answer), so clients branch on the code, not on the text.

use crate::error::ApiError;
use async_graphql::ErrorExtensions;

/// The `extensions.code` of an error.
fn code(status: u16) -> &'static str {
    match status {
        400 => "BAD_REQUEST",
        404 => "NOT_FOUND",
        409 => "CONFLICT",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "GraphQL request failed");
        }
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", code(status.as_u16()));
            ext.set("status", status.as_u16());
            if let ApiError::StartPending { workflow_id, .. } = self {
                ext.set("workflowId", workflow_id.to_string());
            }
        })
    }
}

/// `?` on an API result in a resolver, keeping the code (async-graphql's blanket
/// conversion would keep only the message).
pub(crate) trait OrGql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> OrGql<T> for Result<T, ApiError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| e.extend())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_code_and_status() {
        let e = Err::<(), _>(ApiError::NotFound("no workflow run x".into()))
            .gql()
            .unwrap_err();
        assert_eq!(e.message, "no workflow run x");
        let ext = e.extensions.expect("extensions");
        assert_eq!(
            ext.get("code"),
            Some(&async_graphql::Value::from("NOT_FOUND"))
        );
        assert_eq!(ext.get("status"), Some(&async_graphql::Value::from(404)));
    }
}
