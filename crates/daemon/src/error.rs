//! Errors as the API answers them: a status and `{"error": "..."}` (some
//! with the document that explains the refusal beside it: a commit's
//! refused paths). Refusals of the caller are 403, bad input 4xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloche_broker::BrokerError;
use cloche_service::Error;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// More fields of the answer beside `error`.
    pub extra: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), extra: None }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, m)
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    pub fn unavailable(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
    pub fn with(mut self, extra: Value) -> ApiError {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = match self.extra {
            Some(Value::Object(m)) => Value::Object(m),
            _ => json!({}),
        };
        body["error"] = json!(one_line(&self.message));
        (self.status, axum::Json(body)).into_response()
    }
}

/// Errors are one line.
pub fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The status of a service error.
pub fn service_status(e: &Error) -> StatusCode {
    match e {
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::Invalid(_)
        | Error::Spec(_)
        | Error::Network(_)
        | Error::Exposure(_)
        | Error::Project(_)
        | Error::Policy(_)
        | Error::Seccomp { .. } => StatusCode::BAD_REQUEST,
        Error::BatchFile(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Busy(_) | Error::Commit(_) => StatusCode::CONFLICT,
        Error::Broker(b) => broker_status(b),
        Error::State { .. }
        | Error::World(_)
        | Error::WorldStart(_)
        | Error::Records(_)
        | Error::Spans(_)
        | Error::Diff(_)
        | Error::Discard(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of a broker error.
pub fn broker_status(e: &BrokerError) -> StatusCode {
    match e {
        BrokerError::BatchFile(_) => StatusCode::UNPROCESSABLE_ENTITY,
        BrokerError::NoSuchBatch(_) | BrokerError::NoSuchEntry { .. } | BrokerError::NoSuchAgent(_) => {
            StatusCode::NOT_FOUND
        }
        // Over an agent's budget: try again later (or raise the budget).
        BrokerError::Budget { .. } => StatusCode::TOO_MANY_REQUESTS,
        BrokerError::WrongState { .. }
        | BrokerError::WrongEntryState { .. }
        | BrokerError::Expired(_)
        | BrokerError::NothingToApprove(_)
        | BrokerError::AutonomyOff(_) => StatusCode::CONFLICT,
        BrokerError::SelfApproval { .. }
        | BrokerError::TokenApprover { .. }
        | BrokerError::DeniedEntry { .. }
        | BrokerError::BadToken(_) => StatusCode::FORBIDDEN,
        BrokerError::Invalid(_) => StatusCode::BAD_REQUEST,
        BrokerError::Db(rusqlite_err) if is_busy(rusqlite_err) => StatusCode::SERVICE_UNAVAILABLE,
        BrokerError::Schema { .. } | BrokerError::Io { .. } | BrokerError::Audit(_) | BrokerError::Db(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The database stayed locked past the broker's busy timeout.
fn is_busy(e: &impl std::fmt::Display) -> bool {
    let s = e.to_string();
    s.contains("database is locked") || s.contains("database is busy")
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError::new(service_status(&e), e.to_string())
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        ApiError::new(broker_status(&e), e.to_string())
    }
}
