//! The one admin request helper ([`request`]) and what every operation shares to read
//! librdkafka's objects: the [`Owned`] guard that destroys an object exactly once, and the
//! conversions of C strings, error codes and result arrays.
//!
//! librdkafka copies the request objects it is given, so callers destroy theirs (by dropping
//! the guards) after submitting. A result borrows from its event, which [`request`] keeps alive
//! until the caller's `read` has copied out what it needs.
//!
//! Error codes and the enums of ACL and SCRAM results are read as plain integers (the `as_int`
//! declarations below), never as the bindings' Rust enums: a broker may send a value this
//! librdkafka has no name for, and a Rust enum holding a value outside its variants is undefined
//! behaviour.

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, ClientContext};

use super::{AdminError, ErrorCode};
use crate::config::timeout_ms_for_librdkafka;

/// How long past its own request timeout we wait for librdkafka to deliver a result. librdkafka
/// always answers an admin request by its timeout, so this margin only guards against a bug.
const RESULT_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// Size of the buffers librdkafka writes argument errors into.
const ERRSTR_BYTES: usize = 512;

/// The functions that return a C enum whose value comes from a broker (an error code, an ACL's
/// resource type), declared to return the integer it is.
pub(super) mod as_int {
    use std::ffi::c_int;

    use rdkafka::bindings as rdsys;

    extern "C" {
        pub(in crate::admin) fn rd_kafka_event_error(event: *mut rdsys::rd_kafka_event_t) -> c_int;
        pub(in crate::admin) fn rd_kafka_topic_result_error(
            result: *const rdsys::rd_kafka_topic_result_t,
        ) -> c_int;
        pub(in crate::admin) fn rd_kafka_ConfigResource_error(
            resource: *const rdsys::rd_kafka_ConfigResource_t,
        ) -> c_int;
        pub(in crate::admin) fn rd_kafka_error_code(error: *const rdsys::rd_kafka_error_t) -> c_int;
        pub(in crate::admin) fn rd_kafka_AclBinding_restype(
            acl: *const rdsys::rd_kafka_AclBinding_t,
        ) -> c_int;
        pub(in crate::admin) fn rd_kafka_AclBinding_resource_pattern_type(
            acl: *const rdsys::rd_kafka_AclBinding_t,
        ) -> c_int;
        pub(in crate::admin) fn rd_kafka_AclBinding_operation(
            acl: *const rdsys::rd_kafka_AclBinding_t,
        ) -> c_int;
        pub(in crate::admin) fn rd_kafka_AclBinding_permission_type(
            acl: *const rdsys::rd_kafka_AclBinding_t,
        ) -> c_int;
        pub(in crate::admin) fn rd_kafka_ScramCredentialInfo_mechanism(
            info: *const rdsys::rd_kafka_ScramCredentialInfo_t,
        ) -> c_int;
    }
}

/// The C function that sends a request for `count` objects (librdkafka copies them).
pub(super) type Submit<T> = unsafe extern "C" fn(
    *mut rdsys::rd_kafka_t,
    *mut *mut T,
    usize,
    *const rdsys::rd_kafka_AdminOptions_t,
    *mut rdsys::rd_kafka_queue_t,
);

/// The accessor of an event's typed result: null for an event of another type.
pub(super) type ResultOf =
    unsafe extern "C" fn(*mut rdsys::rd_kafka_event_t) -> *const rdsys::rd_kafka_event_t;

/// One kind of admin request: its name for messages, librdkafka's code for it, the function
/// that sends it for objects of type `T`, and the accessor of its result.
pub(super) struct Operation<T> {
    name: &'static str,
    code: rdsys::rd_kafka_admin_op_t,
    submit: Submit<T>,
    result: ResultOf,
}

impl<T> Operation<T> {
    pub(super) const fn new(
        name: &'static str,
        code: rdsys::rd_kafka_admin_op_t,
        submit: Submit<T>,
        result: ResultOf,
    ) -> Operation<T> {
        Operation { name, code, submit, result }
    }
}

/// What a request is made of: an object the caller holds (and so keeps alive for the call),
/// which librdkafka takes a pointer to and copies.
pub(super) trait Argument<T> {
    fn pointer(&self) -> *mut T;
}

impl<T> Argument<T> for Owned<T> {
    fn pointer(&self) -> *mut T {
        self.as_ptr()
    }
}

impl Argument<c_char> for CString {
    /// librdkafka only reads the string (its functions take `const char *`).
    fn pointer(&self) -> *mut c_char {
        self.as_ptr().cast_mut()
    }
}

/// Sends one admin request for `arguments` and returns what `read` makes of its result.
///
/// `read` gets the typed result, a pointer that is never null and is valid only during the
/// call: it copies out what it needs. A request-level error (no broker reachable in time, an
/// API the broker does not implement) is returned before `read` is called.
pub(super) fn request<C: ClientContext, T, R>(
    client: &Client<C>,
    operation: &Operation<T>,
    timeout: Duration,
    arguments: &[impl Argument<T>],
    read: impl FnOnce(*const rdsys::rd_kafka_event_t) -> Result<R, AdminError>,
) -> Result<R, AdminError> {
    let timeout_ms = timeout_ms_for_librdkafka(timeout);
    // SAFETY: the client handle is live for the whole call (`client` is borrowed).
    let options = unsafe {
        Owned::new(
            rdsys::rd_kafka_AdminOptions_new(client.native_ptr(), operation.code),
            rdsys::rd_kafka_AdminOptions_destroy,
        )
    }
    .ok_or_else(|| AdminError::Invalid(format!("librdkafka refused the {} options", operation.name)))?;
    let mut errstr = ErrBuf::new();
    // SAFETY: `options` is live and ours; `errstr` outlives the call.
    let error = unsafe {
        rdsys::rd_kafka_AdminOptions_set_request_timeout(
            options.as_ptr(),
            timeout_ms,
            errstr.ptr(),
            errstr.len(),
        )
    };
    errstr.check(error, "request timeout")?;
    // CreateTopics, DeleteTopics and CreatePartitions also tell the broker how long to wait for
    // the change to complete before answering; other requests have no such field.
    let has_operation_timeout = matches!(
        operation.code,
        rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATETOPICS
            | rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETETOPICS
            | rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEPARTITIONS
    );
    if has_operation_timeout {
        // SAFETY: as above.
        let error = unsafe {
            rdsys::rd_kafka_AdminOptions_set_operation_timeout(
                options.as_ptr(),
                timeout_ms,
                errstr.ptr(),
                errstr.len(),
            )
        };
        errstr.check(error, "operation timeout")?;
    }
    // SAFETY: as above; the queue is destroyed before the client (`client` outlives this call).
    let queue =
        unsafe { Owned::new(rdsys::rd_kafka_queue_new(client.native_ptr()), rdsys::rd_kafka_queue_destroy) }
            .ok_or_else(|| {
                AdminError::Unexpected("librdkafka could not create a result queue".to_string())
            })?;

    let mut pointers: Vec<*mut T> = arguments.iter().map(Argument::pointer).collect();
    // SAFETY: the handle, options and queue are live; the arguments are borrowed for the call,
    // and librdkafka copies them before it returns.
    unsafe {
        (operation.submit)(
            client.native_ptr(),
            pointers.as_mut_ptr(),
            pointers.len(),
            options.as_ptr(),
            queue.as_ptr(),
        );
    }

    let wait_ms = timeout_ms_for_librdkafka(timeout.saturating_add(RESULT_WAIT_MARGIN));
    // SAFETY: the queue is live; a returned event is ours to destroy.
    let event = unsafe {
        Owned::new(rdsys::rd_kafka_queue_poll(queue.as_ptr(), wait_ms), rdsys::rd_kafka_event_destroy)
    }
    .ok_or_else(|| AdminError::Unexpected(format!("no answer from librdkafka within {wait_ms} ms")))?;
    // SAFETY: the event is live; its error string lives as long as it does.
    let outcome = unsafe {
        code_outcome(
            as_int::rd_kafka_event_error(event.as_ptr()),
            rdsys::rd_kafka_event_error_string(event.as_ptr()),
        )
    };
    request_outcome(operation.name, outcome)?;
    // SAFETY: the event is live; the accessor returns null for an event of another type.
    let result = unsafe { (operation.result)(event.as_ptr()) };
    if result.is_null() {
        return Err(AdminError::Unexpected(format!(
            "librdkafka answered {} with another event",
            operation.name
        )));
    }
    // The event (and with it the result) is destroyed when `event` drops, after `read`.
    read(result)
}

/// A whole request's outcome: an API the broker does not implement (librdkafka finds it missing
/// from the broker's ApiVersions and answers at once) is [`AdminError::Unsupported`], naming
/// the request.
fn request_outcome(operation: &'static str, outcome: Result<(), AdminError>) -> Result<(), AdminError> {
    match outcome {
        Err(AdminError::Refused { code, message })
            if code.0 == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE as c_int =>
        {
            Err(AdminError::Unsupported { operation, message })
        }
        outcome => outcome,
    }
}

/// An object from librdkafka that this code owns and destroys when dropped.
pub(super) struct Owned<T> {
    pointer: NonNull<T>,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Owned<T> {
    /// `None` for a null pointer.
    ///
    /// # Safety
    ///
    /// A non-null `pointer` must be a live object that nothing else will destroy, and `destroy`
    /// must be the librdkafka function that frees that kind of object.
    pub(super) unsafe fn new(pointer: *mut T, destroy: unsafe extern "C" fn(*mut T)) -> Option<Owned<T>> {
        NonNull::new(pointer).map(|pointer| Owned { pointer, destroy })
    }

    /// [`Owned::new`] for an object made for a request: null (librdkafka refused the arguments)
    /// is an [`AdminError::Invalid`] saying `refused`.
    ///
    /// # Safety
    ///
    /// As [`Owned::new`].
    pub(super) unsafe fn made(
        pointer: *mut T,
        destroy: unsafe extern "C" fn(*mut T),
        refused: impl FnOnce() -> String,
    ) -> Result<Owned<T>, AdminError> {
        // SAFETY: the caller's contract.
        unsafe { Owned::new(pointer, destroy) }.ok_or_else(|| AdminError::Invalid(refused()))
    }

    pub(super) fn as_ptr(&self) -> *mut T {
        self.pointer.as_ptr()
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: `new`'s contract: we own the object and `destroy` frees it; drop runs once.
        unsafe { (self.destroy)(self.pointer.as_ptr()) }
    }
}

/// A buffer librdkafka writes an argument error into.
pub(super) struct ErrBuf([c_char; ERRSTR_BYTES]);

impl ErrBuf {
    pub(super) fn new() -> ErrBuf {
        ErrBuf([0; ERRSTR_BYTES])
    }

    pub(super) fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// What librdkafka wrote: a NUL-terminated message; a buffer it never touched is all zeroes.
    pub(super) fn text(&self) -> String {
        let bytes: Vec<u8> = self.0.iter().take_while(|&&byte| byte != 0).map(|&byte| byte as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// An error naming `what` when librdkafka refused a setting.
    fn check(&self, error: rdsys::rd_kafka_resp_err_t, what: &str) -> Result<(), AdminError> {
        if error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(());
        }
        Err(AdminError::Invalid(format!("{what}: {}", self.text())))
    }
}

/// A request object made from a name alone (a topic or group to delete).
///
/// # Safety
///
/// `destroy` must free what `new` makes.
pub(super) unsafe fn named<T>(
    name: &str,
    new: unsafe extern "C" fn(*const c_char) -> *mut T,
    destroy: unsafe extern "C" fn(*mut T),
) -> Result<Owned<T>, AdminError> {
    let name_c = c_string(name)?;
    // SAFETY: `name_c` outlives the call and librdkafka copies it; the caller's contract.
    unsafe { Owned::made(new(name_c.as_ptr()), destroy, || format!("librdkafka refused {name:?}")) }
}

pub(super) fn c_string(text: &str) -> Result<CString, AdminError> {
    CString::new(text).map_err(|_| AdminError::Invalid(format!("{text:?} contains a NUL byte")))
}

/// A C string as Rust text; empty for null.
///
/// # Safety
///
/// `text` must be null or a live NUL-terminated string.
pub(super) unsafe fn c_text(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

/// "Broker: Invalid config: retention.ms: ..." from an error code and the broker's message.
///
/// # Safety
///
/// `message` must be null or a live NUL-terminated string.
pub(super) unsafe fn error_text(code: c_int, message: *const c_char) -> String {
    let code_text = code_text(code);
    // SAFETY: the caller's contract.
    let message = unsafe { c_text(message) };
    if message.is_empty() || message == code_text {
        code_text
    } else {
        format!("{code_text}: {message}")
    }
}

/// librdkafka's text for an error code read as a plain integer, such as "Broker: The group is
/// not empty"; the number itself for a code this librdkafka does not know.
pub(super) fn code_text(code: c_int) -> String {
    match rdsys::rd_kafka_resp_err_t::try_from(code) {
        // SAFETY: rd_kafka_err2str returns a static string for every known code.
        Ok(error) => unsafe { c_text(rdsys::rd_kafka_err2str(error)) },
        Err(_) => format!("error code {code}"),
    }
}

/// An error librdkafka returned for a whole request or an argument, as [`AdminError::Invalid`]:
/// nothing was sent.
pub(super) fn check_resp_err(error: rdsys::rd_kafka_resp_err_t, what: &str) -> Result<(), AdminError> {
    if error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    Err(AdminError::Invalid(format!("{what}: {}", code_text(error as c_int))))
}

/// The error of one entry of a result (`rd_kafka_error_t`; null or code 0 for success), with
/// librdkafka's text for it, which includes the broker's message.
///
/// # Safety
///
/// `error` must be null or a live error object; it is only read, never destroyed (it belongs to
/// its result).
pub(super) unsafe fn entry_error(error: *const rdsys::rd_kafka_error_t) -> Option<AdminError> {
    if error.is_null() {
        return None;
    }
    // SAFETY: the caller's contract; the string lives as long as the error.
    let (code, message) =
        unsafe { (as_int::rd_kafka_error_code(error), c_text(rdsys::rd_kafka_error_string(error))) };
    // Some results (AlterUserScramCredentials) hold an error object for every entry, with code 0
    // where the entry succeeded.
    ErrorCode::from_raw(code).map(|code| AdminError::Refused { code, message })
}

/// An error the caller owns (as `rd_kafka_ConfigResource_add_incremental_config` returns one),
/// destroyed here: `Err` with its text, or `Ok` for null. Nothing was sent.
///
/// # Safety
///
/// `error` must be null or a live error object that is the caller's to destroy.
pub(super) unsafe fn owned_error(error: *mut rdsys::rd_kafka_error_t, what: &str) -> Result<(), AdminError> {
    // SAFETY: the caller's contract.
    let Some(error) = (unsafe { Owned::new(error, rdsys::rd_kafka_error_destroy) }) else { return Ok(()) };
    // SAFETY: the error is live; its string lives as long as it does.
    let text = unsafe { c_text(rdsys::rd_kafka_error_string(error.as_ptr())) };
    Err(AdminError::Invalid(format!("{what}: {text}")))
}

/// The entries of a result array that librdkafka returns with its length through `cntp`.
///
/// # Safety
///
/// `result` must be a live result of the kind `accessor` reads; the slice borrows from it and
/// must not outlive it.
pub(super) unsafe fn result_array<'a, R, T>(
    result: *const R,
    accessor: unsafe extern "C" fn(*const R, *mut usize) -> *mut *const T,
) -> &'a [*const T] {
    let mut count = 0;
    // SAFETY: the caller's contract.
    let entries = unsafe { accessor(result, &mut count) };
    if entries.is_null() || count == 0 {
        return &[];
    }
    // SAFETY: librdkafka returned `count` live entries owned by `result`.
    unsafe { std::slice::from_raw_parts(entries, count) }
}

/// `count` items at `items`; empty for a null pointer or a count below one.
///
/// # Safety
///
/// A non-null `items` with a positive `count` must point to `count` live items that outlive `'a`.
pub(super) unsafe fn raw_slice<'a, T>(items: *const T, count: c_int) -> &'a [T] {
    match usize::try_from(count) {
        // SAFETY: the caller's contract.
        Ok(count) if count > 0 && !items.is_null() => unsafe { std::slice::from_raw_parts(items, count) },
        _ => &[],
    }
}

/// Name and outcome of each entry of a CreateTopics, DeleteTopics or CreatePartitions result.
///
/// # Safety
///
/// Every entry must be a live topic result.
pub(super) unsafe fn topic_outcomes(
    results: &[*const rdsys::rd_kafka_topic_result_t],
) -> Vec<(String, Result<(), AdminError>)> {
    // SAFETY: each entry is a live topic result whose strings live as long as it does.
    let outcome = |result| unsafe {
        let code = as_int::rd_kafka_topic_result_error(result);
        let message = rdsys::rd_kafka_topic_result_error_string(result);
        (c_text(rdsys::rd_kafka_topic_result_name(result)), code_outcome(code, message))
    };
    results.iter().map(|&result| outcome(result)).collect()
}

/// Name and outcome of a config resource of an IncrementalAlterConfigs result.
///
/// # Safety
///
/// `resource` must be a live config resource of a result.
pub(super) unsafe fn resource_outcome(
    resource: *const rdsys::rd_kafka_ConfigResource_t,
) -> (String, Result<(), AdminError>) {
    // SAFETY: the caller's contract; the strings live as long as the resource.
    unsafe {
        let code = as_int::rd_kafka_ConfigResource_error(resource);
        let message = rdsys::rd_kafka_ConfigResource_error_string(resource);
        (c_text(rdsys::rd_kafka_ConfigResource_name(resource)), code_outcome(code, message))
    }
}

/// `Ok` for code 0, else the refusal with librdkafka's text for the code and `message`.
///
/// # Safety
///
/// `message` must be null or a live NUL-terminated string.
unsafe fn code_outcome(code: c_int, message: *const c_char) -> Result<(), AdminError> {
    match ErrorCode::from_raw(code) {
        None => Ok(()),
        // SAFETY: the caller's contract.
        Some(error) => {
            Err(AdminError::Refused { code: error, message: unsafe { error_text(code, message) } })
        }
    }
}

/// The outcome for `name` from a result that should hold exactly that one entry.
pub(super) fn single<T>(outcomes: Vec<(String, Result<T, AdminError>)>, name: &str) -> Result<T, AdminError> {
    match outcomes.into_iter().find(|(result_name, _)| result_name == name) {
        Some((_, outcome)) => outcome,
        None => Err(AdminError::Unexpected(format!("the answer did not mention {name:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_the_broker_lacks_is_named_and_other_errors_keep_their_code() {
        let unsupported = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE as c_int;
        // What librdkafka 2.12 answered CreateAcls with against `tidewater serve` before the
        // broker had the ACL APIs.
        let message = "Local: Required feature not supported by broker: ACLs Admin API (KIP-140) not \
                       supported by broker, requires broker version >= 0.11.0.0";
        let lacking = Err(AdminError::Refused { code: ErrorCode(unsupported), message: message.to_string() });
        let shown = request_outcome("CreateAcls", lacking).map_err(|error| error.to_string());
        assert_eq!(shown, Err(format!("the broker does not support CreateAcls: {message}")));
        // SAFETY: a null message is allowed.
        let timed_out = unsafe { code_outcome(-185, std::ptr::null()) };
        let shown =
            request_outcome("CreateTopics", timed_out).map_err(|error| (error.code(), error.to_string()));
        assert_eq!(shown, Err((Some(ErrorCode(-185)), "Local: Timed out".to_string())));
        assert!(request_outcome("DeleteGroups", Ok(())).is_ok());
        assert_eq!(code_text(12_345), "error code 12345");
    }
}
