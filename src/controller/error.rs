//! Why a reconciliation failed.

/// A failed reconciliation, named after the operation that failed. Each one is retried with
/// backoff; an invalid job template is not an error (it is reported on the status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a JobSink whose cached copy could not be decoded.
    #[error("reading the JobSink failed")]
    ReadSink(#[source] kube::Error),
    /// The dry run of the Job could not be done (not: the API server refused the Job).
    #[error("dry-running the Job failed")]
    DryRunJob(#[source] kube::Error),
    /// Writing the status subresource.
    #[error("patching the JobSink status failed")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// A short, fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadSink(_) => "read_sink",
            Error::DryRunJob(_) => "dry_run_job",
            Error::PatchStatus(_) => "patch_status",
        }
    }
}
