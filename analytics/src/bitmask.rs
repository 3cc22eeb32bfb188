//! The shared behaviour of the `u32` flag columns (spectral `quality_flags`, flow `flow_flags`).
//!
//! Each flag type is a `pub struct X(pub u32)` with its bit constants and a `NAMES` table; this
//! macro gives it the same set operations, name listing and `A|B` display, so the two columns
//! read alike in SQL output and the code exists once.

/// Implements `contains`, `insert`, `is_ok`, `names`, `|`, `|=` and `Display` for a flag type
/// that has a `const NAMES: [(Self, &'static str); N]` table.
macro_rules! impl_flag_bitmask {
    ($flags:ident) => {
        impl $flags {
            /// True if every bit of `other` is set.
            #[inline]
            pub fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Sets the bits of `other`.
            #[inline]
            pub fn insert(&mut self, other: Self) {
                self.0 |= other.0;
            }

            /// True if no bit is set.
            #[inline]
            pub fn is_ok(self) -> bool {
                self.0 == 0
            }

            /// Names of the set bits, in bit order.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                Self::NAMES
                    .into_iter()
                    .filter(move |(f, _)| self.contains(*f))
                    .map(|(_, n)| n)
            }
        }

        impl std::ops::BitOr for $flags {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                Self(self.0 | rhs.0)
            }
        }

        impl std::ops::BitOrAssign for $flags {
            fn bitor_assign(&mut self, rhs: Self) {
                self.0 |= rhs.0;
            }
        }

        impl std::fmt::Display for $flags {
            /// `OK`, or the names of the set bits joined by `|`.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if self.is_ok() {
                    return f.write_str("OK");
                }
                for (index, name) in self.names().enumerate() {
                    if index > 0 {
                        f.write_str("|")?;
                    }
                    f.write_str(name)?;
                }
                Ok(())
            }
        }
    };
}

pub(crate) use impl_flag_bitmask;
