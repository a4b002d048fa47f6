//! The `tracebridge` command line.

fn main() {
    println!("tracebridge");
}
