//! Small REST objects that are neither pins nor peers: the error body and the JWT of `POST /token`.

use serde::{Deserialize, Serialize};

/// The body of every error response: `{"code": <http status>, "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
}

/// `POST /token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub token: String,
}
