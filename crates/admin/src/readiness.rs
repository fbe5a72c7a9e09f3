//! [`Readiness`]: whether the role is ready to serve, and if not, why.

use std::sync::Mutex;

/// Ready, or not with a reason. A role starts not ready ("starting") and says when it is.
#[derive(Debug)]
pub struct Readiness {
    not_ready: Mutex<Option<String>>,
}

impl Readiness {
    /// Not ready, for `reason`.
    pub fn new(reason: impl Into<String>) -> Readiness {
        Readiness { not_ready: Mutex::new(Some(reason.into())) }
    }

    pub fn set_ready(&self) {
        *self.not_ready.lock().expect("readiness lock poisoned") = None;
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready.lock().expect("readiness lock poisoned") = Some(reason.into());
    }

    /// `Ok` when ready, the reason otherwise.
    pub fn check(&self) -> Result<(), String> {
        match &*self.not_ready.lock().expect("readiness lock poisoned") {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}
