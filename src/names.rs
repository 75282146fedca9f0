//! One table per enum of names the API accepts and prints: `as_str`, `NAMES` (for
//! error messages and the documentation) and `FromStr` come from the same list, so
//! a name cannot be added to one and forgotten in another.

/// `names!(Type { Variant => "name", ... })` implements `Type::as_str`,
/// `Type::NAMES` ("name, name, ...") and `FromStr` (unknown names are `Err(())`).
macro_rules! names {
    ($ty:ty { $v1:ident => $n1:literal $(, $v:ident => $n:literal)* $(,)? }) => {
        impl $ty {
            /// Every accepted name, comma-separated, in declaration order.
            pub const NAMES: &'static str = concat!($n1 $(, ", ", $n)*);

            pub fn as_str(self) -> &'static str {
                match self {
                    Self::$v1 => $n1,
                    $(Self::$v => $n,)*
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s {
                    $n1 => Ok(Self::$v1),
                    $($n => Ok(Self::$v),)*
                    _ => Err(()),
                }
            }
        }
    };
}

pub(crate) use names;

#[cfg(test)]
mod tests {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Colour {
        Red,
        DeepBlue,
    }
    super::names!(Colour { Red => "red", DeepBlue => "deep_blue" });

    #[test]
    fn one_table_gives_names_parsing_and_printing() {
        assert_eq!(Colour::NAMES, "red, deep_blue");
        assert_eq!("deep_blue".parse::<Colour>(), Ok(Colour::DeepBlue));
        assert_eq!(Colour::Red.as_str(), "red");
        assert!("blue".parse::<Colour>().is_err());
        for name in Colour::NAMES.split(", ") {
            assert_eq!(name.parse::<Colour>().unwrap().as_str(), name);
        }
    }
}
