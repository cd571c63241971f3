//! The distribution spec's error codes.

/// An OCI distribution error code (spec code-1 … code-14, plus the legacy codes clients know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    TagInvalid,
    RangeInvalid,
    PaginationNumberInvalid,
    Unknown,
    Unavailable,
    /// ACR's `/acr/v1` code for a tag that does not exist.
    TagUnknown,
    /// ACR's code for an operation a lock or the quarantine forbids.
    RegistryDisallowedOperation,
    /// A path that is no endpoint at all (`/acr/v1`, `/oauth2/nope`): Distribution answers
    /// those with a bare 404, but a client deserves a body it can parse.
    NotFound,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid => "SIZE_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            TagInvalid => "TAG_INVALID",
            RangeInvalid => "RANGE_INVALID",
            PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Unknown => "UNKNOWN",
            Unavailable => "UNAVAILABLE",
            TagUnknown => "TAG_UNKNOWN",
            RegistryDisallowedOperation => "REGISTRY_DISALLOWED_OPERATION",
            NotFound => "NOT_FOUND",
        }
    }

    /// The status distribution registers for the code; endpoints may prescribe another.
    pub fn default_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BlobUnknown | BlobUploadInvalid | BlobUploadUnknown | ManifestUnknown | NameUnknown
            | TagUnknown | NotFound => 404,
            DigestInvalid
            | ManifestBlobUnknown
            | ManifestInvalid
            | NameInvalid
            | SizeInvalid
            | TagInvalid
            | PaginationNumberInvalid => 400,
            Unauthorized => 401,
            Denied => 403,
            Unsupported | RegistryDisallowedOperation => 405,
            RangeInvalid => 416,
            TooManyRequests => 429,
            Unknown => 500,
            Unavailable => 503,
        }
    }
}
