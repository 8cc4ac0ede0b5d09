//! Responses of the API: JSON bodies, the error JSON, and how crate errors and warp rejections map
//! to status codes.

use std::convert::Infallible;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use serde::Serialize;
use warp::reply::Response;
use warp::Rejection;

use crate::types::ApiError;
use crate::Error;

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The status a client sees for each kind of failure; clients act on it without reading the body.
pub(crate) fn status_of(err: &Error) -> StatusCode {
    StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `{"code":..,"message":..}` with that status.
pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ApiError { code: status.as_u16(), message: message.into() };
    json_response(status, &body)
}

pub(crate) fn error_from(err: &Error) -> Response {
    let status = status_of(err);
    if status.is_server_error() {
        tracing::warn!(%status, error = %err, "request failed");
    }
    error_response(status, err.to_string())
}

/// A JSON body with a trailing newline, as Go's encoder writes it.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut resp = Response::new(body.into());
            *resp.status_mut() = status;
            resp.headers_mut().insert(CONTENT_TYPE, JSON);
            resp
        }
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding response: {e}")),
    }
}

/// 200 with the value, or the error's status with the error JSON.
pub(crate) fn reply<T: Serialize>(result: crate::Result<T>) -> Response {
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(err) => error_from(&err),
    }
}

/// 204, no body.
pub(crate) fn no_content() -> Response {
    let mut resp = Response::new(Vec::<u8>::new().into());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// Requests no route matched: 404 `not found` (405 when the path exists with other methods).
pub(crate) async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    if !rejection.is_not_found() {
        tracing::debug!(?rejection, "unexpected rejection");
    }
    Ok(error_response(StatusCode::NOT_FOUND, "not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_kind_has_its_status() {
        let cases = [
            (Error::InvalidCid("error decoding Cid: x".into()), 400),
            (Error::BadRequest("parameter replication-min invalid".into()), 400),
            (Error::NotFound("pin is not part of the pinset".into()), 404),
            (Error::Unauthorized("no".into()), 401),
            (Error::Allocation("not enough peers to allocate CID".into()), 500),
            (Error::Ipfs("boom".into()), 500),
            (Error::IpfsUnreachable("refused".into()), 500),
            (Error::PeerUnreachable("12D3KooW...: connection refused".into()), 500),
            (Error::Timeout("pin".into()), 500),
            (Error::Storage("disk".into()), 500),
            (Error::ShuttingDown, 500),
            (Error::Unavailable("no leader".into()), 503),
            (Error::Conflict("cannot remove the last member".into()), 409),
            (Error::Remote { code: 503, message: "forwarded".into() }, 503),
        ];
        for (err, code) in cases {
            assert_eq!(status_of(&err).as_u16(), code, "{err:?}");
        }
    }

    #[tokio::test]
    async fn error_body_is_code_and_message() {
        use http_body_util::BodyExt;
        let resp = error_from(&Error::NotFound("pin is not part of the pinset".into()));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, serde_json::json!({"code": 404, "message": "pin is not part of the pinset"}));
    }
}
