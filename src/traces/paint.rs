//! ANSI colours, when drawing to a terminal ([`Paint`]).

/// ANSI colours when drawing to a terminal, nothing otherwise.
#[derive(Clone, Copy)]
pub(super) struct Paint(pub(super) bool);

impl Paint {
    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    pub(super) fn service(self, name: &str) -> String {
        const PALETTE: [&str; 6] = ["36", "35", "34", "33", "32", "96"];
        let hash = name
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        self.wrap(PALETTE[hash % PALETTE.len()], name)
    }
    pub(super) fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
    pub(super) fn error(self, text: &str) -> String {
        self.wrap("1;31", text)
    }
}
