//! The one error type handlers return. Refusals carry a stable [`ErrorCode`] and a message
//! for people; internal causes are logged here and never sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use verifier_core::proto::v1::{ErrorCode, ErrorResponse, MAX_ERROR_MESSAGE};

/// A refusal or failure, ready to be sent.
#[derive(Debug)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail (no secrets, no internal causes).
    pub message: String,
    /// Whose failure budget the refusal is charged to.
    pub charge: Charge,
}

/// Whose budget a refusal is charged to.
///
/// Only evidence signed by an agent's activated AK and bound to that agent's challenge can
/// be charged to the agent: anything else anyone could have sent, so it is charged to the
/// source address ([`crate::net::throttle`]), never to the machine it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Nobody: the server's own state or fault (internal, busy, the host's provider), a
    /// refusal by a limit that already counted, or a cheap refusal of state.
    Nobody,
    /// The source address: forged input that cost the server work; anyone could have sent
    /// it.
    Source,
    /// The agent: its AK signed the refused evidence (recorded by the role, counted by the
    /// agent's failed-attempt limit).
    Agent,
}

impl ApiError {
    /// A refusal with a reason. Its charge is decided here, once, from the code: the
    /// refusals of forged input that cost the server work (a body that does not decode, an
    /// EK or IAK certificate or AK to check, an AK other than the agent's pinned one, a wrong
    /// activation proof, a quote whose signature or
    /// binding does not verify) and bodies slower than the minimum rate (holding memory is
    /// what a slow body costs) are charged to the source; refusals of state (unknown,
    /// expired or used challenge, terminated session, not enrolled) are cheap, decided by a
    /// read, and are what honest agents meet after an outage or a race, so they are charged
    /// to nobody (a site whose machines share one address must not be throttled for them).
    /// [`Self::by_agent`] moves a refusal of evidence the agent's AK signed to the agent.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let charge = match code {
            ErrorCode::MalformedRequest
            | ErrorCode::PayloadTooLarge
            | ErrorCode::EkCertUntrusted
            | ErrorCode::IakCertUntrusted
            | ErrorCode::IakIdentityMismatch
            | ErrorCode::AkNotAcceptable
            | ErrorCode::UnknownRegistration
            | ErrorCode::ActivationFailed
            | ErrorCode::QuoteInvalid
            | ErrorCode::BindingMismatch
            | ErrorCode::AkNotPinned
            | ErrorCode::TeeEvidenceInvalid
            | ErrorCode::ChallengeAnswerInvalid
            | ErrorCode::RequestTimeout => Charge::Source,
            // Decided by a read of state, by a limit that already counted, or the server's
            // own condition; evidence failures the AK signed are moved to the agent by
            // `by_agent` where they are decided (see `ValidationError::signed_by_ak`).
            ErrorCode::Unauthorized
            | ErrorCode::UnknownAgent
            | ErrorCode::NotEnrolled
            | ErrorCode::IakNotBound
            | ErrorCode::NotAwaitingDeposit
            | ErrorCode::UnknownChallenge
            | ErrorCode::ChallengeExpired
            | ErrorCode::ChallengeUsed
            | ErrorCode::PcrMismatch
            | ErrorCode::EventLogMismatch
            | ErrorCode::ImaLogMismatch
            | ErrorCode::PolicyDenied
            | ErrorCode::HostUnreachable
            | ErrorCode::HostQuoteInvalid
            | ErrorCode::HostPolicyDenied
            | ErrorCode::SessionTerminated
            | ErrorCode::ResetCountRegressed
            | ErrorCode::AgentTerminated
            | ErrorCode::RateLimited
            | ErrorCode::EvidenceKindMismatch
            | ErrorCode::EvidenceKindDisabled
            | ErrorCode::ChallengeAnswerMissing
            | ErrorCode::ServerBusy
            | ErrorCode::Internal => Charge::Nobody,
        };
        Self {
            code,
            message: message.into(),
            charge,
        }
    }

    /// The same refusal, charged to the agent whose AK signed the refused evidence (and
    /// bound it to this challenge): the only refusals the agent's own limit counts.
    #[must_use]
    pub fn by_agent(mut self) -> Self {
        self.charge = Charge::Agent;
        self
    }

    /// An internal fault: the cause is logged, the client learns only that it happened.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal server error (see the server log)",
        )
    }

    /// The HTTP status for the code: the one place a refusal becomes a status, exhaustive
    /// (a new code must be given its status here, not fall into a neighbour's).
    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::MalformedRequest => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::UnknownRegistration
            | ErrorCode::UnknownAgent
            | ErrorCode::NotEnrolled
            | ErrorCode::UnknownChallenge => StatusCode::NOT_FOUND,
            ErrorCode::NotAwaitingDeposit => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::EkCertUntrusted
            | ErrorCode::IakCertUntrusted
            | ErrorCode::IakIdentityMismatch
            | ErrorCode::IakNotBound
            | ErrorCode::AkNotAcceptable
            | ErrorCode::AkNotPinned
            | ErrorCode::ActivationFailed
            | ErrorCode::ChallengeExpired
            | ErrorCode::ChallengeUsed
            | ErrorCode::QuoteInvalid
            | ErrorCode::BindingMismatch
            | ErrorCode::PcrMismatch
            | ErrorCode::EventLogMismatch
            | ErrorCode::ImaLogMismatch
            | ErrorCode::PolicyDenied
            | ErrorCode::HostUnreachable
            | ErrorCode::HostQuoteInvalid
            | ErrorCode::HostPolicyDenied
            | ErrorCode::SessionTerminated
            | ErrorCode::ResetCountRegressed
            | ErrorCode::TeeEvidenceInvalid
            | ErrorCode::ChallengeAnswerMissing
            | ErrorCode::ChallengeAnswerInvalid
            | ErrorCode::AgentTerminated => StatusCode::FORBIDDEN,
            // The enrollment (or the server's start) says otherwise: the operator's
            // configuration, not the request.
            ErrorCode::EvidenceKindMismatch | ErrorCode::EvidenceKindDisabled => {
                StatusCode::CONFLICT
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<verifier_core::proto::ProtoError> for ApiError {
    fn from(e: verifier_core::proto::ProtoError) -> Self {
        Self::new(ErrorCode::MalformedRequest, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut message = self.message;
        if message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE - 3;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let body = serde_json::to_vec(&ErrorResponse {
            code: self.code,
            message,
        })
        .unwrap_or_default();
        let mut resp = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        // The body was not read to its end: the connection cannot carry another request.
        if matches!(
            self.code,
            ErrorCode::PayloadTooLarge | ErrorCode::RequestTimeout | ErrorCode::ServerBusy
        ) {
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}
