//! PAM (`auth.socks_method = "pam"`): a username and password checked by the PAM
//! service `auth.pam_service`, then its account checks (expired, locked, password
//! change required), as `login` does. libpam is loaded when the method is chosen
//! (dlopen of `libpam.so.0`), so building needs no PAM headers, and a system
//! without PAM fails at start with a clear error instead of at link time.
//!
//! Every call blocks (modules read files, ask SSSD, sleep on failure): the caller
//! runs it on the blocking pool.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_PERM_DENIED: c_int = 6;
const PAM_AUTH_ERR: c_int = 7;
const PAM_CRED_INSUFFICIENT: c_int = 8;
const PAM_USER_UNKNOWN: c_int = 10;
const PAM_MAXTRIES: c_int = 11;
const PAM_NEW_AUTHTOK_REQD: c_int = 12;
const PAM_ACCT_EXPIRED: c_int = 13;
const PAM_CONV_ERR: c_int = 19;
const PAM_SILENT: c_int = 0x8000;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
/// Linux-PAM's bound on messages in one conversation call.
const PAM_MAX_NUM_MSG: c_int = 32;

// Fields PAM reads or writes; Rust code touches only some of them.
#[allow(dead_code)]
#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[allow(dead_code)]
#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type Converse = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<Converse>,
    appdata_ptr: *mut c_void,
}

type StartFn =
    unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type StepFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type StrerrorFn = unsafe extern "C" fn(*mut c_void, c_int) -> *const c_char;

/// Why PAM said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PamDenied {
    UnknownUser,
    WrongPassword,
    /// The password was right, the account is not usable (expired, locked, a
    /// password change required): PAM's words.
    Account(String),
    /// PAM itself failed (a module missing, SSSD unreachable): PAM's words.
    Error(String),
}

/// libpam's entry points and the service to check against.
pub struct Pam {
    service: CString,
    start: StartFn,
    authenticate: StepFn,
    acct_mgmt: StepFn,
    end: StepFn,
    strerror: StrerrorFn,
}

// SAFETY: function pointers into a library that stays loaded for the life of the
// process (it is never dlclosed), and a CString; each check has its own PAM handle.
unsafe impl Send for Pam {}
unsafe impl Sync for Pam {}

impl std::fmt::Debug for Pam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pam")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Pam {
    /// Loads libpam for `service`. The error says what is missing.
    pub fn load(service: &str) -> Result<Self, String> {
        let service = CString::new(service).map_err(|_| "the service name holds a NUL byte")?;
        // SAFETY: dlopen with a valid C string; the handle is kept for ever.
        let lib =
            unsafe { libc::dlopen(c"libpam.so.0".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            return Err(format!("cannot load libpam.so.0 ({})", dl_error()));
        }
        let sym = |name: &CStr| -> Result<*mut c_void, String> {
            // SAFETY: `lib` is a live handle and `name` a valid C string.
            let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
            match p.is_null() {
                true => Err(format!("libpam.so.0 has no {name:?}")),
                false => Ok(p),
            }
        };
        // SAFETY: the symbols are libpam's functions with these C signatures
        // (security/pam_appl.h).
        unsafe {
            Ok(Self {
                service,
                start: std::mem::transmute::<*mut c_void, StartFn>(sym(c"pam_start")?),
                authenticate: std::mem::transmute::<*mut c_void, StepFn>(sym(c"pam_authenticate")?),
                acct_mgmt: std::mem::transmute::<*mut c_void, StepFn>(sym(c"pam_acct_mgmt")?),
                end: std::mem::transmute::<*mut c_void, StepFn>(sym(c"pam_end")?),
                strerror: std::mem::transmute::<*mut c_void, StrerrorFn>(sym(c"pam_strerror")?),
            })
        }
    }

    /// Checks `user`'s `password`, then the account. Blocks.
    pub fn check(&self, user: &[u8], password: &[u8]) -> Result<(), PamDenied> {
        // A NUL byte cannot reach PAM; no system user has one in their name.
        let Ok(user) = CString::new(user) else {
            return Err(PamDenied::UnknownUser);
        };
        let Ok(password) = CString::new(password) else {
            return Err(PamDenied::WrongPassword);
        };
        let creds = Credentials { user, password };
        let conv = PamConv {
            conv: Some(converse),
            appdata_ptr: ptr::from_ref(&creds).cast_mut().cast(),
        };
        let mut handle: *mut c_void = ptr::null_mut();
        // SAFETY: valid C strings, a conversation whose data outlives the handle
        // (`creds` lives to the end of this function, after pam_end).
        let rc = unsafe {
            (self.start)(
                self.service.as_ptr(),
                creds.user.as_ptr(),
                &conv,
                &mut handle,
            )
        };
        if rc != PAM_SUCCESS || handle.is_null() {
            return Err(PamDenied::Error(format!("pam_start failed ({rc})")));
        }
        let flags = PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK;
        // SAFETY: `handle` is live until pam_end below.
        let mut rc = unsafe { (self.authenticate)(handle, flags) };
        let authenticated = rc == PAM_SUCCESS;
        if authenticated {
            // SAFETY: as above.
            rc = unsafe { (self.acct_mgmt)(handle, flags) };
        }
        let words = self.words(handle, rc);
        // SAFETY: ends the transaction started above; the handle is not used after.
        unsafe { (self.end)(handle, rc) };
        drop(creds);
        match (rc, authenticated) {
            (PAM_SUCCESS, _) => Ok(()),
            (PAM_USER_UNKNOWN, false) => Err(PamDenied::UnknownUser),
            (PAM_AUTH_ERR | PAM_CRED_INSUFFICIENT | PAM_MAXTRIES, false) => {
                Err(PamDenied::WrongPassword)
            }
            (
                PAM_ACCT_EXPIRED | PAM_NEW_AUTHTOK_REQD | PAM_PERM_DENIED | PAM_USER_UNKNOWN,
                true,
            ) => Err(PamDenied::Account(words)),
            _ => Err(PamDenied::Error(words)),
        }
    }

    fn words(&self, handle: *mut c_void, rc: c_int) -> String {
        // SAFETY: a live handle; pam_strerror returns a static string or null.
        let text = unsafe { (self.strerror)(handle, rc) };
        if text.is_null() {
            return format!("PAM error {rc}");
        }
        // SAFETY: non-null, NUL-terminated (pam_strerror's contract).
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

/// What the conversation answers with. The password's bytes are overwritten when
/// the check is over.
struct Credentials {
    user: CString,
    password: CString,
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let password = std::mem::take(&mut self.password);
        let mut bytes = password.into_bytes_with_nul();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// The conversation: the password for a hidden prompt, the user name for a visible
/// one, nothing for messages; anything else ends the conversation. PAM frees the
/// answers (malloc'd here, as it requires).
unsafe extern "C" fn converse(
    count: c_int,
    messages: *mut *const PamMessage,
    answers: *mut *mut PamResponse,
    data: *mut c_void,
) -> c_int {
    if !(1..=PAM_MAX_NUM_MSG).contains(&count)
        || messages.is_null()
        || answers.is_null()
        || data.is_null()
    {
        return PAM_CONV_ERR;
    }
    // SAFETY: `data` is the `Credentials` that `check` passed, alive during the call.
    let creds = unsafe { &*data.cast::<Credentials>() };
    let n = count as usize;
    // SAFETY: calloc of n zeroed responses; checked for null.
    let replies =
        unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of `count` message pointers.
        let message = unsafe { *messages.add(i) };
        let style = match message.is_null() {
            true => -1,
            // SAFETY: a non-null message from PAM.
            false => unsafe { (*message).msg_style },
        };
        let text = match style {
            PAM_PROMPT_ECHO_OFF => Some(&creds.password),
            PAM_PROMPT_ECHO_ON => Some(&creds.user),
            PAM_ERROR_MSG | PAM_TEXT_INFO => None,
            _ => {
                // SAFETY: frees what was allocated so far, then the array.
                unsafe { free_replies(replies, i) };
                return PAM_CONV_ERR;
            }
        };
        if let Some(text) = text {
            // SAFETY: strdup of a valid C string; `replies` has n entries.
            let copy = unsafe { libc::strdup(text.as_ptr()) };
            if copy.is_null() {
                // SAFETY: as above.
                unsafe { free_replies(replies, i) };
                return PAM_BUF_ERR;
            }
            // SAFETY: i < n.
            unsafe { (*replies.add(i)).resp = copy };
        }
    }
    // SAFETY: `answers` is PAM's out-pointer.
    unsafe { *answers = replies };
    PAM_SUCCESS
}

/// Frees the first `filled` answers and the array (a conversation that fails
/// returns nothing to PAM).
unsafe fn free_replies(replies: *mut PamResponse, filled: usize) {
    for j in 0..filled {
        // SAFETY: the caller's array has at least `filled` entries, each null or
        // strdup'd.
        unsafe {
            let r = (*replies.add(j)).resp;
            if !r.is_null() {
                // Overwrite before freeing: it may be the password.
                libc::memset(r.cast(), 0, libc::strlen(r));
                libc::free(r.cast());
            }
        }
    }
    // SAFETY: calloc'd by the caller.
    unsafe { libc::free(replies.cast()) };
}

/// The dynamic loader's last error, in words.
fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next
    // dl* call on this thread.
    let text = unsafe { libc::dlerror() };
    if text.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, NUL-terminated.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}
