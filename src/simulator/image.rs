//! A simulated device's register image: coils, discrete inputs, holding and input registers,
//! written through the profile's codec.

use std::collections::HashMap;

use crate::config::{ModbusAddr, ProfilePoint};
use crate::sources::modbus::codec;
use crate::sources::modbus::plan::Function;

#[derive(Debug, Default)]
pub struct RegisterImage {
    coils: HashMap<u16, bool>,
    discrete: HashMap<u16, bool>,
    holding: HashMap<u16, u16>,
    input: HashMap<u16, u16>,
}

impl RegisterImage {
    fn words_mut(&mut self, f: Function) -> &mut HashMap<u16, u16> {
        if f == Function::InputRegisters {
            &mut self.input
        } else {
            &mut self.holding
        }
    }

    pub fn write_point(&mut self, pp: &ProfilePoint, value: f64) {
        let Some(p) = pp.part::<ModbusAddr>() else {
            return;
        };
        match p.function {
            Function::Coils => {
                self.coils.insert(p.address, value != 0.0);
            }
            Function::DiscreteInputs => {
                self.discrete.insert(p.address, value != 0.0);
            }
            f => {
                if let Some(bit) = p.bit {
                    let w = self.words_mut(f).entry(p.address).or_insert(0);
                    if value != 0.0 {
                        *w |= 1 << bit;
                    } else {
                        *w &= !(1 << bit);
                    }
                } else {
                    let raw = codec::unscale(value, pp.scale, pp.offset);
                    let words = codec::encode_raw(raw, p.data_type, p.byte_order);
                    let map = self.words_mut(f);
                    for (i, w) in words.into_iter().enumerate() {
                        map.insert(p.address.wrapping_add(i as u16), w);
                    }
                }
            }
        }
    }

    pub fn read_point(&self, pp: &ProfilePoint) -> Option<f64> {
        let p = pp.part::<ModbusAddr>()?;
        match p.function {
            Function::Coils => Some(f64::from(u8::from(*self.coils.get(&p.address)?))),
            Function::DiscreteInputs => Some(f64::from(u8::from(*self.discrete.get(&p.address)?))),
            f => {
                let map = if f == Function::InputRegisters {
                    &self.input
                } else {
                    &self.holding
                };
                if let Some(bit) = p.bit {
                    return Some(f64::from(map.get(&p.address)? >> bit & 1));
                }
                let words: Vec<u16> = (0..p.data_type.words())
                    .map(|i| map.get(&p.address.wrapping_add(i)).copied().unwrap_or(0))
                    .collect();
                codec::decode_raw(&words, p.data_type, p.byte_order)
                    .map(|raw| codec::scale(raw, pp.scale, pp.offset))
            }
        }
    }

    pub fn read_words(&self, f: Function, start: u16, count: u16) -> Vec<u16> {
        let map = if f == Function::InputRegisters {
            &self.input
        } else {
            &self.holding
        };
        (0..count)
            .map(|i| map.get(&start.wrapping_add(i)).copied().unwrap_or(0))
            .collect()
    }

    pub fn read_bits(&self, f: Function, start: u16, count: u16) -> Vec<bool> {
        let map = if f == Function::Coils {
            &self.coils
        } else {
            &self.discrete
        };
        (0..count)
            .map(|i| map.get(&start.wrapping_add(i)).copied().unwrap_or(false))
            .collect()
    }
}
