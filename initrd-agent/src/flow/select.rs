//! The quote's PCR selection (the union of the roles' challenges) and the PCR values in
//! their wire form.

use verifier_core::proto::v1::{PcrBank, PcrSelection as WirePcrSelection, PcrValue};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::{BankSelection, HashAlg, PcrSelection, PcrValues, PCR_COUNT};

/// The union of several challenges' selections: banks in order of first appearance, PCRs
/// ascending. One quote over it answers every role.
pub fn union(selections: &[&[WirePcrSelection]]) -> Result<PcrSelection, &'static str> {
    let mut banks: Vec<(HashAlg, [bool; PCR_COUNT as usize])> = Vec::new();
    for sel in selections {
        for bank in sel.iter() {
            let pos = match banks.iter().position(|(h, _)| *h == bank.hash) {
                Some(p) => p,
                None => {
                    banks.push((bank.hash, [false; PCR_COUNT as usize]));
                    banks.len() - 1
                }
            };
            let Some((_, set)) = banks.get_mut(pos) else {
                return Err("internal bookkeeping");
            };
            for &i in &bank.pcrs {
                *set.get_mut(usize::from(i))
                    .ok_or("a PCR index is above 23")? = true;
            }
        }
    }
    let mut out = Vec::with_capacity(banks.len());
    for (hash, set) in banks {
        let indexes: Vec<u8> = (0..PCR_COUNT)
            .filter(|i| set.get(usize::from(*i)).copied().unwrap_or(false))
            .collect();
        out.push(BankSelection::new(hash, &indexes).ok_or("a PCR index is above 23")?);
    }
    let sel = PcrSelection::new(out).ok_or("a bank is listed twice")?;
    if sel.is_empty() {
        return Err("no PCR selected");
    }
    Ok(sel)
}

/// The values of every PCR in `sel`, by bank in selection order (what `AttestRequest.pcrs`
/// carries).
pub fn pcr_banks(sel: &PcrSelection, values: &PcrValues) -> Vec<PcrBank> {
    sel.banks()
        .iter()
        .map(|b| PcrBank {
            hash: b.hash(),
            values: b
                .indexes()
                .filter_map(|i| {
                    values.get(b.hash(), i).map(|d| PcrValue {
                        index: i,
                        digest: Base64Bytes::from(d.as_bytes()),
                    })
                })
                .collect(),
        })
        .collect()
}

/// True when PCR `index` of any bank is selected.
pub fn selects(sel: &PcrSelection, index: u8) -> bool {
    sel.banks().iter().any(|b| b.contains(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(hash: HashAlg, pcrs: &[u8]) -> WirePcrSelection {
        WirePcrSelection {
            hash,
            pcrs: pcrs.to_vec(),
        }
    }

    #[test]
    fn union_merges_banks_and_indexes() {
        let a = [wire(HashAlg::Sha256, &[0, 7, 15])];
        let b = [
            wire(HashAlg::Sha256, &[7, 10, 15]),
            wire(HashAlg::Sha1, &[0]),
        ];
        let u = union(&[&a, &b]).unwrap();
        let got: Vec<(HashAlg, u8)> = u.iter().collect();
        assert_eq!(
            got,
            vec![
                (HashAlg::Sha256, 0),
                (HashAlg::Sha256, 7),
                (HashAlg::Sha256, 10),
                (HashAlg::Sha256, 15),
                (HashAlg::Sha1, 0)
            ]
        );
        assert!(selects(&u, 10) && !selects(&u, 11));
    }

    #[test]
    fn union_refuses_out_of_range_and_empty() {
        assert!(union(&[&[wire(HashAlg::Sha256, &[24])]]).is_err());
        assert!(union(&[&[]]).is_err());
    }
}
