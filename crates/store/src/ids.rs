//! The keys of the storage boundary: who owns a row ([`Owner`]), which thread ([`ThreadId`])
//! and which run ([`RunId`]). Each is its own type so that two of them cannot be swapped in a
//! store call (`get(owner, thread_id)` with the arguments crossed does not compile), while
//! costing nothing: each borrows the `&str` it names and is `Copy`.
//!
//! Reading one as text is free ([`Deref`] to `str`, [`Display`]); making one is explicit
//! (`Owner(user)`, `ThreadId(&thread.thread_id)`), which is where a caller says which is which.

use std::fmt;
use std::ops::Deref;

macro_rules! borrowed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> $name<'a> {
            /// The id as text, for as long as the text it borrows.
            pub fn as_str(self) -> &'a str {
                self.0
            }
        }

        impl Deref for $name<'_> {
            type Target = str;
            fn deref(&self) -> &str {
                self.0
            }
        }

        impl AsRef<str> for $name<'_> {
            fn as_ref(&self) -> &str {
                self.0
            }
        }

        impl fmt::Display for $name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }

        impl fmt::Debug for $name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl PartialEq<str> for $name<'_> {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name<'_> {
            fn eq(&self, other: &String) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<$name<'_>> for String {
            fn eq(&self, other: &$name<'_>) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name<'_>> for &str {
            fn eq(&self, other: &$name<'_>) -> bool {
                *self == other.0
            }
        }
    };
}

borrowed_id!(
    /// The user a row belongs to (the actor's identity; `""` where auth is off). Every read
    /// and write of user data is filtered by it.
    Owner
);
borrowed_id!(
    /// A thread's id (unique per owner).
    ThreadId
);
borrowed_id!(
    /// A run's id (a UUID, unique across owners).
    RunId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_as_their_text_and_debug_as_their_kind() {
        let (owner, thread) = (Owner("alice"), ThreadId("t-1"));
        assert_eq!(owner.as_str(), "alice");
        assert_eq!(&*thread, "t-1");
        assert_eq!(thread.to_string(), "t-1");
        assert_eq!(
            format!("{owner:?} {thread:?}"),
            r#"Owner("alice") ThreadId("t-1")"#
        );
        assert_eq!(RunId("r"), *"r");
    }
}
