//! Argument conditions and their complement.
//!
//! libseccomp cannot express "action U for this syscall, except when the
//! arguments match C": an unconditional rule swallows every conditional rule
//! of the same syscall, a rule whose action equals the default action is
//! refused (EACCES), and one rule may compare each argument only once
//! (EINVAL). So "U unless C₁ ∨ … ∨ Cₙ" is compiled as U-rules for the
//! complement ¬C₁ ∧ … ∧ ¬Cₙ, written as a union of conjunctions (terms) that
//! libseccomp can take: at most one comparison per argument in each term.
//!
//! The negation of a masked equality `(x & m) == v` is the disjoint union of
//! `popcount(m)` masked equalities ("x agrees with v on the bits of m above
//! bit i and differs at bit i"), and masked equalities on one argument
//! intersect into a masked equality, so exceptions written with `EQ`, `NE` or
//! `MASKED_EQ` always compile. Ranges (`LT`, `GE`, …) compile when they never
//! need intersecting with a different kind of comparison on the same argument.

/// A comparison of one 64-bit syscall argument (libseccomp semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Op {
    Eq(u64),
    Ne(u64),
    Lt(u64),
    Le(u64),
    Gt(u64),
    Ge(u64),
    MaskedEq { mask: u64, value: u64 },
}

/// `Op` applied to argument `arg` (0..=5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Cond {
    pub arg: u32,
    pub op: Op,
}

/// A conjunction with at most one condition per argument, sorted by argument.
pub(crate) type Term = Vec<Cond>;

/// The complement cannot be written as libseccomp rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ComplementError {
    /// Two comparisons on one argument whose intersection is not one comparison.
    NotRepresentable(Cond, Cond),
    /// More than [`MAX_TERMS`] rules would be needed.
    TooManyTerms,
}

/// Upper bound on the rules one syscall's complement may take.
pub(crate) const MAX_TERMS: usize = 512;

/// The always-true comparison.
const ALWAYS: Op = Op::MaskedEq { mask: 0, value: 0 };

impl Op {
    /// Does argument value `x` satisfy the comparison?
    pub(crate) fn matches(self, x: u64) -> bool {
        match self {
            Op::Eq(v) => x == v,
            Op::Ne(v) => x != v,
            Op::Lt(v) => x < v,
            Op::Le(v) => x <= v,
            Op::Gt(v) => x > v,
            Op::Ge(v) => x >= v,
            Op::MaskedEq { mask, value } => x & mask == value,
        }
    }

    fn is_never(self) -> bool {
        match self {
            Op::Lt(0) | Op::Gt(u64::MAX) => true,
            Op::MaskedEq { mask, value } => value & !mask != 0,
            _ => false,
        }
    }

    fn is_always(self) -> bool {
        matches!(self, Op::Ge(0) | Op::Le(u64::MAX) | Op::MaskedEq { mask: 0, value: 0 })
    }

    /// The single value this comparison accepts, if it accepts exactly one.
    fn point(self) -> Option<u64> {
        match self {
            Op::Eq(v) => Some(v),
            Op::MaskedEq { mask: u64::MAX, value } => Some(value),
            _ => None,
        }
    }

    /// The complement, as a union of comparisons (empty: never true).
    pub(crate) fn negate(self) -> Vec<Op> {
        match self {
            Op::Eq(v) => vec![Op::Ne(v)],
            Op::Ne(v) => vec![Op::Eq(v)],
            Op::Lt(v) => vec![Op::Ge(v)],
            Op::Le(v) => vec![Op::Gt(v)],
            Op::Gt(v) => vec![Op::Le(v)],
            Op::Ge(v) => vec![Op::Lt(v)],
            Op::MaskedEq { mask, value } if value & !mask != 0 => vec![ALWAYS],
            Op::MaskedEq { mask, value } => (0..64u32)
                .rev()
                .filter(|bit| mask & (1u64 << bit) != 0)
                .map(|bit| {
                    let at = 1u64 << bit;
                    // bits of the mask strictly above `bit`
                    let above = mask & !(at | (at - 1));
                    Op::MaskedEq { mask: above | at, value: (value & above) | (!value & at) }
                })
                .collect(),
        }
    }

    /// Is every value accepted by `self` accepted by `other`? (May answer
    /// false when it cannot tell: only used to drop redundant terms.)
    fn implies(self, other: Op) -> bool {
        if other.is_always() || self == other || self.is_never() {
            return true;
        }
        if let Some(p) = self.point() {
            return other.matches(p);
        }
        match (self, other) {
            (Op::MaskedEq { mask: m1, value: v1 }, Op::MaskedEq { mask: m2, value: v2 }) => {
                m2 & !m1 == 0 && v1 & m2 == v2
            }
            _ => false,
        }
    }

    /// The intersection as one comparison; `Ok(None)` when it is empty.
    fn intersect(self, other: Op) -> Result<Option<Op>, ()> {
        if self.is_never() || other.is_never() {
            return Ok(None);
        }
        if self == other || other.is_always() {
            return Ok(Some(self));
        }
        if self.is_always() {
            return Ok(Some(other));
        }
        if let Some(p) = self.point() {
            return Ok(other.matches(p).then_some(Op::Eq(p)));
        }
        if let Some(p) = other.point() {
            return Ok(self.matches(p).then_some(Op::Eq(p)));
        }
        match (self, other) {
            (Op::MaskedEq { mask: m1, value: v1 }, Op::MaskedEq { mask: m2, value: v2 }) => {
                if (v1 ^ v2) & m1 & m2 != 0 {
                    Ok(None)
                } else {
                    Ok(Some(Op::MaskedEq { mask: m1 | m2, value: v1 | v2 }))
                }
            }
            (Op::Lt(a), Op::Lt(b)) => Ok(Some(Op::Lt(a.min(b)))),
            (Op::Le(a), Op::Le(b)) => Ok(Some(Op::Le(a.min(b)))),
            (Op::Gt(a), Op::Gt(b)) => Ok(Some(Op::Gt(a.max(b)))),
            (Op::Ge(a), Op::Ge(b)) => Ok(Some(Op::Ge(a.max(b)))),
            _ => Err(()),
        }
    }
}

/// Does the conjunction accept these six argument values?
#[cfg(test)]
pub(crate) fn term_matches(term: &[Cond], args: &[u64; 6]) -> bool {
    term.iter().all(|c| c.op.matches(args[c.arg as usize]))
}

/// `NE v` as the union of 64 masked equalities, so that it can be intersected
/// with masks; any other comparison as itself.
fn expand(op: Op) -> Vec<Op> {
    match op {
        Op::Ne(v) => Op::MaskedEq { mask: u64::MAX, value: v }.negate(),
        other => vec![other],
    }
}

/// `a ∧ b` on one argument as a union of comparisons (empty: never).
fn intersect_any(a: Op, b: Op) -> Result<Vec<Op>, ()> {
    if let Ok(r) = a.intersect(b) {
        return Ok(r.into_iter().collect());
    }
    // NE v ∩ X: X itself when v is not in X; a masked X minus one point is
    // X split on the bits its mask leaves free.
    for (ne, other) in [(a, b), (b, a)] {
        if let Op::Ne(v) = ne {
            if !other.matches(v) {
                return Ok(vec![other]);
            }
            if let Op::MaskedEq { mask, .. } = other {
                let free = Op::MaskedEq { mask: !mask, value: v & !mask };
                let mut out = Vec::new();
                for op in free.negate() {
                    out.extend(other.intersect(op)?);
                }
                return Ok(out);
            }
        }
    }
    let (ea, eb) = (expand(a), expand(b));
    if ea.len() == 1 && eb.len() == 1 {
        return Err(());
    }
    let mut out = Vec::new();
    for &x in &ea {
        for &y in &eb {
            out.extend(x.intersect(y)?);
        }
    }
    Ok(out)
}

/// `term ∧ cond` as a union of terms (empty: never).
fn conjoin(term: &[Cond], cond: Cond) -> Result<Vec<Term>, ComplementError> {
    if cond.op.is_never() {
        return Ok(Vec::new());
    }
    let ops = match term.iter().find(|c| c.arg == cond.arg) {
        None => vec![cond.op],
        Some(c) => intersect_any(c.op, cond.op).map_err(|()| ComplementError::NotRepresentable(*c, cond))?,
    };
    Ok(ops
        .into_iter()
        .map(|op| {
            let mut t: Term = term.iter().copied().filter(|c| c.arg != cond.arg).collect();
            if !op.is_always() {
                t.push(Cond { arg: cond.arg, op });
                t.sort();
            }
            t
        })
        .collect())
}

/// Does every argument vector accepted by `b` satisfy `a`?
fn term_implies(b: &[Cond], a: &[Cond]) -> bool {
    a.iter().all(|ca| ca.op.is_always() || b.iter().any(|cb| cb.arg == ca.arg && cb.op.implies(ca.op)))
}

/// Sort, deduplicate and drop terms contained in another term.
fn simplify(mut terms: Vec<Term>) -> Vec<Term> {
    terms.sort();
    terms.dedup();
    // An empty term accepts everything: it alone is the union.
    if terms.iter().any(|t| t.is_empty()) {
        return vec![Vec::new()];
    }
    let keep: Vec<bool> =
        (0..terms.len()).map(|i| !(0..terms.len()).any(|j| j != i && term_implies(&terms[i], &terms[j]))).collect();
    terms.into_iter().zip(keep).filter_map(|(t, k)| k.then_some(t)).collect()
}

/// The complement of `rule₁ ∨ … ∨ ruleₙ` (each rule a conjunction) as a union
/// of terms. An empty result never matches; a result holding an empty term
/// always matches.
pub(crate) fn complement(rules: &[Term]) -> Result<Vec<Term>, ComplementError> {
    let terms = match split(rules)? {
        Some(terms) => simplify(terms),
        None => negate_each(rules)?,
    };
    if terms.len() > MAX_TERMS {
        return Err(ComplementError::TooManyTerms);
    }
    Ok(terms)
}

/// The complement by cases on the lowest argument the rules compare, when
/// each rule compares it with EQ (or leaves it free), or every rule that
/// compares it uses one same comparison. With V the values compared, R_v the
/// rest of the rules that ask for v and W the rules that leave it free:
///
///   ¬(R ∨ W) = (arg ∉ V ∧ ¬W) ∨ ⋁_{v ∈ V} (arg = v ∧ ¬(R_v ∨ W))
///
/// "arg ∉ V" is a few ranges and aligned blocks ([`outside`]), so an
/// allowlist of values (socket families, then protocols) costs a handful
/// of rules, where negating each rule in turn (`negate_each`) would multiply
/// 64-way splits of every `NE`. `None`: the rules have another shape.
fn split(rules: &[Term]) -> Result<Option<Vec<Term>>, ComplementError> {
    if rules.iter().any(|r| r.is_empty()) {
        return Ok(Some(Vec::new()));
    }
    let Some(arg) = rules.iter().flatten().map(|c| c.arg).min() else {
        return Ok(Some(vec![Vec::new()])); // no rule: everything
    };
    let on = |r: &Term| r.iter().find(|c| c.arg == arg).map(|c| c.op);
    let rest = |r: &Term| -> Term { r.iter().filter(|c| c.arg != arg).copied().collect() };
    let free: Vec<Term> = rules.iter().filter(|r| on(r).is_none()).cloned().collect();
    let ops: Vec<Op> = rules.iter().filter_map(on).collect();
    // (comparisons of `arg` whose union is one case, the rules left in that case)
    let mut cases: Vec<(Vec<Op>, Vec<Term>)> = Vec::new();
    if ops.iter().all(|o| o.point().is_some()) {
        let mut values: Vec<u64> = ops.iter().filter_map(|o| o.point()).collect();
        values.sort_unstable();
        values.dedup();
        cases.push((outside(&values), free.clone()));
        for v in values {
            let mut left = free.clone();
            left.extend(rules.iter().filter(|r| on(r).and_then(Op::point) == Some(v)).map(rest));
            cases.push((vec![Op::Eq(v)], left));
        }
    } else if ops.iter().all(|o| *o == ops[0]) {
        let mut left = free.clone();
        left.extend(rules.iter().filter(|r| on(r).is_some()).map(rest));
        cases.push((ops[0].negate(), free.clone()));
        cases.push((vec![ops[0]], left));
    } else {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (ops, left) in cases {
        // `left` compares only arguments above `arg`: prefixing is conjoining.
        let tail = complement(&left)?;
        for op in ops.into_iter().filter(|o| !o.is_never()) {
            for t in &tail {
                let mut t = t.clone();
                if !op.is_always() {
                    t.push(Cond { arg, op });
                    t.sort();
                }
                out.push(t);
                if out.len() > MAX_TERMS {
                    return Err(ComplementError::TooManyTerms);
                }
            }
        }
    }
    Ok(Some(out))
}

/// The values that are none of `sorted` (ascending, distinct), as comparisons.
pub(crate) fn outside(sorted: &[u64]) -> Vec<Op> {
    let mut out = Vec::new();
    let mut next = 0u64; // lowest value not yet covered
    for &v in sorted {
        if v > next {
            out.extend(range(next, v - 1));
        }
        match v.checked_add(1) {
            Some(n) => next = n,
            None => return out,
        }
    }
    out.extend(range(next, u64::MAX));
    out
}

/// `lo..=hi` as comparisons: `LE`/`GE` when it reaches an end of the u64
/// range, else aligned power-of-two blocks (masked equalities), largest first.
fn range(lo: u64, hi: u64) -> Vec<Op> {
    match (lo, hi) {
        _ if lo == hi => vec![Op::Eq(lo)],
        (0, u64::MAX) => vec![ALWAYS],
        (0, _) => vec![Op::Le(hi)],
        (_, u64::MAX) => vec![Op::Ge(lo)],
        _ => {
            let mut out = Vec::new();
            let mut x = lo;
            loop {
                // The largest block that starts at x (aligned) and ends by hi.
                let mut bits = x.trailing_zeros().min(63);
                while bits > 0 && x.checked_add((1u64 << bits) - 1).is_none_or(|end| end > hi) {
                    bits -= 1;
                }
                let size = (1u64 << bits) - 1;
                out.push(if bits == 0 { Op::Eq(x) } else { Op::MaskedEq { mask: !size, value: x } });
                let end = x + size;
                if end >= hi {
                    return out;
                }
                x = end + 1;
            }
        }
    }
}

/// The complement by negating one rule after the other and distributing.
fn negate_each(rules: &[Term]) -> Result<Vec<Term>, ComplementError> {
    let mut acc: Vec<Term> = vec![Vec::new()];
    for rule in rules {
        // ¬(c₁ ∧ … ∧ cₖ) = ¬c₁ ∨ … ∨ ¬cₖ
        let alternatives: Vec<Cond> =
            rule.iter().flat_map(|c| c.op.negate().into_iter().map(|op| Cond { arg: c.arg, op })).collect();
        let mut next = Vec::new();
        for term in &acc {
            for &alt in &alternatives {
                next.extend(conjoin(term, alt)?);
            }
            if next.len() > MAX_TERMS * 64 {
                return Err(ComplementError::TooManyTerms);
            }
        }
        acc = simplify(next);
        if acc.len() > MAX_TERMS {
            return Err(ComplementError::TooManyTerms);
        }
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn value(&mut self, interesting: &[u64]) -> u64 {
            match self.next() % 4 {
                0 => self.next(),
                1 => interesting[(self.next() % interesting.len() as u64) as usize],
                2 => interesting[(self.next() % interesting.len() as u64) as usize] ^ (1 << (self.next() % 64)),
                _ => {
                    (self.next() & 0xffff_ffff_0000_0000)
                        | interesting[(self.next() % interesting.len() as u64) as usize] & 0xffff_ffff
                }
            }
        }
    }

    fn check(rules: &[Term], samples: &[[u64; 6]]) -> usize {
        let comp = complement(rules).expect("representable");
        for args in samples {
            let in_rules = rules.iter().any(|r| term_matches(r, args));
            let in_comp = comp.iter().any(|t| term_matches(t, args));
            assert_ne!(in_rules, in_comp, "args {args:x?} rules {rules:?} complement {comp:?}");
            // the terms are disjoint or at least never contradict: no term may match a rule
        }
        comp.len()
    }

    fn masked(arg: u32, mask: u64, value: u64) -> Cond {
        Cond { arg, op: Op::MaskedEq { mask, value } }
    }

    #[test]
    fn seccomp_negated_masked_eq_is_exact() {
        let interesting = [0x5412, 0x541c, 0, u64::MAX, 0xffff_ffff, 0x1_0000_5412];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let samples: Vec<[u64; 6]> = (0..20_000).map(|_| std::array::from_fn(|_| rng.value(&interesting))).collect();
        // the ioctl exceptions of the default profile
        let ioctl = [vec![masked(1, 0xffff_ffff, 0x5412)], vec![masked(1, 0xffff_ffff, 0x541c)]];
        let n = check(&ioctl, &samples);
        assert!(n <= 40, "ioctl complement has {n} terms");
        // the socket exception: two arguments in one rule
        let socket = [vec![masked(0, 0xffff_ffff, 16), masked(2, 0xffff_ffff, 12)]];
        assert_eq!(check(&socket, &samples), 64);
        // plain EQ / NE and a rule that can never match
        check(&[vec![Cond { arg: 3, op: Op::Eq(7) }]], &samples);
        check(&[vec![Cond { arg: 3, op: Op::Ne(7) }], vec![masked(3, 0xf, 0x3)]], &samples);
        assert_eq!(complement(&[vec![masked(0, 0xf, 0x10)]]).unwrap(), vec![Vec::<Cond>::new()]);
        assert!(complement(&[vec![masked(0, 0, 0)]]).unwrap().is_empty());
        // Ranges mixed with masks on the same argument are refused, not guessed.
        let mixed = [vec![Cond { arg: 0, op: Op::Lt(10) }], vec![masked(0, 0xff, 3)]];
        assert!(matches!(complement(&mixed), Err(ComplementError::NotRepresentable(..))));
    }

    #[test]
    fn seccomp_allowlist_complements_are_exact_and_small() {
        // outside(): no value of the set, every value not in it, at the
        // edges of u64 too.
        for set in [vec![], vec![0], vec![u64::MAX], vec![0, u64::MAX], vec![1, 2, 10, 16], vec![3, 4, 5, 1 << 40]] {
            let ops = outside(&set);
            let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
            for &v in &set {
                probes.extend([v.wrapping_sub(1), v, v.wrapping_add(1)]);
            }
            for x in probes {
                assert_eq!(ops.iter().any(|o| o.matches(x)), !set.contains(&x), "{x:#x} against {set:?}: {ops:?}");
            }
        }
        // The socket allowlist of the default profile: a family, then a
        // type mask and a protocol.
        let eq = |arg, v| Cond { arg, op: Op::Eq(v) };
        let mut rules: Vec<Term> = vec![vec![eq(0, 1)]];
        for family in [2, 10] {
            for protocol in [0, 1, 6, 17, 58] {
                rules.push(vec![eq(0, family), masked(1, 0xc, 0), eq(2, protocol)]);
            }
        }
        rules.extend([vec![eq(0, 16), eq(2, 0)], vec![eq(0, 16), eq(2, 4)]]);
        let interesting = [0, 1, 2, 3, 4, 6, 10, 12, 16, 17, 40, 58, 262, 0xffff_ffff, u64::MAX, 1 << 32 | 2];
        let mut rng = Rng(5);
        let samples: Vec<[u64; 6]> = (0..50_000).map(|_| std::array::from_fn(|_| rng.value(&interesting))).collect();
        let n = check(&rules, &samples);
        assert!(n <= 40, "the socket allowlist's complement takes {n} rules");
        // Random allowlists: points on a first argument, then points or one
        // shared comparison on later ones, some rules leaving them free.
        for _ in 0..300 {
            let rules: Vec<Term> = (0..1 + rng.next() % 5)
                .map(|_| {
                    let mut t = vec![eq(0, interesting[(rng.next() % 8) as usize])];
                    match rng.next() % 3 {
                        0 => t.push(eq(2, rng.next() % 4)),
                        1 => t.push(masked(1, 0xc, 0)),
                        _ => {}
                    }
                    t
                })
                .collect();
            check(&rules, &samples[..5_000]);
        }
    }

    #[test]
    fn seccomp_random_complements_are_exact() {
        let interesting = [0, 1, 3, 8, 0xff, 0x100, u64::MAX, 0xffff_ffff];
        let mut rng = Rng(42);
        let samples: Vec<[u64; 6]> = (0..4_000).map(|_| std::array::from_fn(|_| rng.value(&interesting))).collect();
        let mut too_many = 0;
        for _ in 0..200 {
            let nrules = 1 + rng.next() % 3;
            let rules: Vec<Term> = (0..nrules)
                .map(|_| {
                    let mut t: Term = Vec::new();
                    for arg in 0..3u32 {
                        if rng.next() & 1 == 0 {
                            let v = interesting[(rng.next() % 8) as usize] & 0xff;
                            let op = match rng.next() % 3 {
                                0 => Op::Eq(v),
                                1 => Op::Ne(v),
                                _ => Op::MaskedEq { mask: 0xff & !(rng.next() & 0x0f), value: v & 0xf0 },
                            };
                            t.push(Cond { arg, op });
                        }
                    }
                    t
                })
                .collect();
            match complement(&rules) {
                Ok(_) => {
                    check(&rules, &samples);
                }
                Err(ComplementError::NotRepresentable(..)) => {}
                Err(ComplementError::TooManyTerms) => too_many += 1,
            }
        }
        assert!(too_many < 10, "{too_many} of 200 random exception sets were too complex");
    }
}
