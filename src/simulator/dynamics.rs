//! Plausible behaviour of each simulated device model: water demand over the day, tanks
//! filling and draining, elevators travelling between floors, meters following the load,
//! and what each scenario does to them.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::config::Profile;

use super::scenario::{ActiveScenario, ScenarioKind};
use super::SimDevice;

pub enum ModelState {
    PumpRoom {
        tank_level: f64,
        water_total: f64,
    },
    PowerMeter {
        energy: f64,
    },
    Switchgear,
    Elevator(Car),
    FirePanel,
    Generic {
        values: Vec<f64>,
    },
    /// Values stay as they are (tests).
    Frozen,
}

pub struct Car {
    position: f64,
    target: i32,
    floors: i32,
    door_timer: f64,
    door_open: bool,
    occupied: bool,
}

impl ModelState {
    pub fn new(model: &str, profile: &Profile, seed: usize) -> Self {
        match model {
            "pump_room" => ModelState::PumpRoom {
                tank_level: 2.5,
                water_total: 12_000.0,
            },
            "power_meter" => ModelState::PowerMeter { energy: 100_000.0 },
            "switchgear" => ModelState::Switchgear,
            "elevator" => ModelState::Elevator(Car {
                position: 1.0 + (seed % 5) as f64,
                target: 1,
                floors: 18,
                door_timer: 0.0,
                door_open: false,
                occupied: false,
            }),
            "fire_panel" => ModelState::FirePanel,
            _ => ModelState::Generic {
                values: profile
                    .points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        if p.is_bool() {
                            0.0
                        } else {
                            10.0 + ((seed * 31 + i * 7) % 90) as f64
                        }
                    })
                    .collect(),
            },
        }
    }
}

/// Water demand 0..1 over the day in China Standard Time: morning and evening peaks.
fn demand() -> f64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let hour = ((secs + 8 * 3600) % 86_400) as f64 / 3600.0;
    let peak = |h: f64, w: f64| (-((hour - h) / w).powi(2)).exp();
    (0.25 + 0.55 * peak(7.5, 1.5) + 0.65 * peak(19.5, 2.0)).min(1.0)
}

fn active(scenarios: &[&ActiveScenario], kind: ScenarioKind) -> Option<f64> {
    scenarios
        .iter()
        .find(|s| s.kind == kind)
        .map(|s| s.elapsed_seconds())
}

/// Whether a scenario of this kind names this device explicitly.
fn targeted(scenarios: &[&ActiveScenario], kind: ScenarioKind, device: &str) -> bool {
    scenarios
        .iter()
        .any(|s| s.kind == kind && s.device.as_deref() == Some(device))
}

/// What every model reads: the scenarios running, the power outage's age, the demand curve.
struct Env<'a> {
    scenarios: &'a [&'a ActiveScenario],
    /// Seconds since a power outage began, while one runs.
    power_out: Option<f64>,
    /// 0..1 over the day.
    demand: f64,
    dt: f64,
}

/// Advance one device by `dt` seconds (`dt == 0` just re-applies the current state).
pub fn step(dev: &mut SimDevice, scenarios: &[&ActiveScenario], dt: f64, _now: f64) {
    let mut rng = rand::rng();
    let mut noise = |a: f64| {
        if a == 0.0 {
            0.0
        } else {
            rng.random_range(-a..a)
        }
    };
    let env = Env {
        scenarios,
        power_out: active(scenarios, ScenarioKind::PowerOutage),
        demand: demand(),
        dt,
    };
    let mut state = std::mem::replace(&mut dev.state, ModelState::Frozen);
    match &mut state {
        ModelState::Frozen => {}
        ModelState::PumpRoom {
            tank_level,
            water_total,
        } => pump_room(dev, &env, tank_level, water_total, &mut noise),
        ModelState::PowerMeter { energy } => power_meter(dev, &env, energy, &mut noise),
        ModelState::Switchgear => switchgear(dev, &env, &mut noise),
        ModelState::Elevator(car) => elevator(dev, &env, car),
        ModelState::FirePanel => fire_panel(dev, &env),
        ModelState::Generic { values } => generic(dev, dt, values, &mut noise),
    }
    dev.state = state;
}

/// The pump room: three pumps on a demand curve, pressures per zone, the tank, the sump.
fn pump_room(
    dev: &mut SimDevice,
    env: &Env<'_>,
    tank_level: &mut f64,
    water_total: &mut f64,
    noise: &mut dyn FnMut(f64) -> f64,
) {
    let (d, power_out, scenarios, dt) = (env.demand, env.power_out, env.scenarios, env.dt);
    let water_out = active(scenarios, ScenarioKind::WaterOutage).is_some();
    let burst = active(scenarios, ScenarioKind::BurstPipe).is_some();
    let flooding = active(scenarios, ScenarioKind::Flooding).is_some();
    let setpoints = [("low", 0.30), ("mid", 0.38), ("high", 0.45)];
    let mut freqs = [
        30.0 + 18.0 * d,
        if d > 0.7 {
            30.0 + 50.0 * (d - 0.7)
        } else {
            0.0
        },
        0.0,
    ];
    if burst {
        freqs = [50.0, 50.0, 50.0];
    }
    if power_out.is_some() {
        freqs = [0.0; 3];
    }
    for (i, f) in freqs.iter().enumerate() {
        let n = i + 1;
        let f = if *f > 0.0 {
            (f + noise(0.2)).min(50.0)
        } else {
            0.0
        };
        dev.set(&format!("pump{n}_freq"), f);
        dev.set(&format!("pump{n}_current"), f * 0.42);
        dev.set_bool(&format!("pump{n}_run"), f > 0.0);
        dev.set_bool(&format!("pump{n}_fault"), false);
        dev.set_bool(&format!("pump{n}_enabled"), true);
    }
    for (zone, sp) in setpoints {
        let p = if power_out.is_some() {
            0.08
        } else if burst && zone == "mid" {
            sp * 0.55
        } else {
            sp - 0.01 * d + noise(0.003)
        };
        dev.set(&format!("outlet_pressure_{zone}"), p.max(0.0));
    }
    let inlet = if water_out { 0.0 } else { 0.28 + noise(0.005) };
    dev.set("inlet_pressure", inlet);
    let mut flow = 20.0 + 60.0 * d;
    if burst {
        flow *= 3.0;
    }
    if power_out.is_some() {
        flow = 0.0;
    }
    // the tank refills from the mains below 2.6 m; outflow follows the pumps
    let inflow = if water_out || *tank_level > 2.6 {
        0.0
    } else {
        0.0025
    };
    let outflow = flow / 80.0 * 0.0015 * if water_out { 4.0 } else { 1.0 };
    *tank_level = (*tank_level + (inflow - outflow) * dt).clamp(0.0, 3.0);
    *water_total += flow * dt / 3600.0;
    dev.set("tank_level", *tank_level);
    dev.set("flow_rate", flow + noise(0.5));
    dev.set("water_total", water_total.floor());
    dev.set("fire_tank_level", 4.5);
    dev.set("hydrant_pressure", 0.35 + noise(0.002));
    dev.set(
        "sump_level",
        if flooding { 0.95 } else { 0.15 + noise(0.005) },
    );
    dev.set_bool("flood", flooding);
    dev.set_bool("flood_sensor", flooding);
    dev.set_bool("smoke", false);
    dev.set_bool("door_open", false);
    dev.set("temperature", 22.0 + noise(0.3));
    dev.set("humidity", 60.0 + noise(1.0));
    dev.set("chlorine", 0.3 + noise(0.01));
    dev.set("turbidity", 0.2 + noise(0.02));
}

/// The incoming power meter: phases, load on the demand curve, energy.
fn power_meter(
    dev: &mut SimDevice,
    env: &Env<'_>,
    energy: &mut f64,
    noise: &mut dyn FnMut(f64) -> f64,
) {
    let (d, power_out, dt) = (env.demand, env.power_out, env.dt);
    let on = power_out.is_none();
    let load = 0.3 + 0.6 * d;
    let phase = |n: f64| if on { 228.0 + n } else { 0.0 };
    for p in ["ua", "ub", "uc"] {
        dev.set(p, phase(noise(1.5)));
    }
    for p in ["uab", "ubc", "uca"] {
        dev.set(p, if on { 395.0 + noise(2.5) } else { 0.0 });
    }
    let amps = if on { 80.0 + 200.0 * load } else { 0.0 };
    for p in ["ia", "ib", "ic"] {
        dev.set(p, (amps + noise(3.0)).max(0.0));
    }
    let pf = if on { 0.92 + noise(0.01) } else { 0.0 };
    let kw = 3.0f64.sqrt() * 0.395 * amps * pf;
    dev.set("p_total", kw);
    dev.set("pf", pf);
    dev.set("freq", if on { 50.0 + noise(0.02) } else { 0.0 });
    *energy += kw * dt / 3600.0;
    dev.set("energy_import", *energy);
}

/// The distribution room: transformers, breakers, the ATS and the generator.
fn switchgear(dev: &mut SimDevice, env: &Env<'_>, noise: &mut dyn FnMut(f64) -> f64) {
    let (d, power_out, scenarios) = (env.demand, env.power_out, env.scenarios);
    let gen_on = power_out.is_some_and(|t| t >= 10.0);
    // flooding hits the pump room unless a distribution room is named as the target
    let flooding = targeted(scenarios, ScenarioKind::Flooding, &dev.id);
    for (i, p) in [
        "transformer_temp_a",
        "transformer_temp_b",
        "transformer_temp_c",
    ]
    .iter()
    .enumerate()
    {
        let t = if power_out.is_some() {
            45.0
        } else {
            60.0 + 35.0 * d + i as f64
        };
        dev.set(p, t + noise(0.4));
    }
    dev.set("dc_voltage", 220.0 + noise(0.5));
    dev.set("room_temperature", 26.0 + noise(0.3));
    dev.set("room_humidity", 55.0 + noise(1.0));
    dev.set_bool("incoming1_closed", true);
    dev.set_bool("incoming2_closed", true);
    dev.set_bool("bus_tie_closed", false);
    dev.set_bool("incoming1_trip", false);
    dev.set_bool("incoming2_trip", false);
    dev.set_bool("ats_mains", power_out.is_none());
    dev.set_bool("ats_generator", gen_on);
    dev.set_bool("generator_running", gen_on);
    dev.set_bool("generator_fault", false);
    dev.set_bool("dc_fault", false);
    dev.set_bool("flood", flooding);
    dev.set_bool("smoke", false);
    dev.set_bool("door_open", false);
}

/// A lift car: answering calls, levelled by its rescue device in a power outage, stuck
/// between floors when an entrapment names it.
fn elevator(dev: &mut SimDevice, env: &Env<'_>, car: &mut Car) {
    let (power_out, scenarios, dt) = (env.power_out, env.scenarios, env.dt);
    let trapped = targeted(scenarios, ScenarioKind::Entrapment, &dev.id);
    let mut rng = rand::rng();
    let (speed, direction, door_state, door_zone, running);
    if trapped {
        // stuck between floors, doors shut, passenger pressing the alarm
        if car.position.fract().abs() < 0.2 || car.position.fract() > 0.8 {
            car.position = car.position.floor() + 0.5;
        }
        car.occupied = true;
        car.door_open = false;
        (speed, direction, door_state, door_zone, running) = (0.0, 0, 0, false, false);
    } else if power_out.is_some() {
        // the automatic rescue device levels the car at the nearest floor and opens
        // the doors; passengers walk out (a car named by `entrapment` does not)
        car.position = car.position.round();
        car.target = car.position as i32;
        car.door_open = true;
        car.occupied = false;
        (speed, direction, door_state, door_zone, running) = (0.0, 0, 1, true, false);
    } else {
        let target = f64::from(car.target);
        if (car.position - target).abs() < 1e-6 {
            // at a floor: doors open a while, then pick the next call
            car.door_timer += dt;
            car.door_open = car.door_timer < 4.0;
            if car.door_timer >= 5.0 {
                car.door_timer = 0.0;
                car.target = rng.random_range(1..=car.floors);
                car.occupied = rng.random_bool(0.6);
            }
            (speed, direction, door_state, door_zone, running) =
                (0.0, 0, if car.door_open { 1 } else { 0 }, true, false);
        } else {
            let step = 0.5 * dt; // floors per second at 1.5 m/s and 3 m per floor
            let up = target > car.position;
            car.position = if up {
                (car.position + step).min(target)
            } else {
                (car.position - step).max(target)
            };
            car.door_open = false;
            (speed, direction, door_state, door_zone, running) = (
                1.5,
                if up { 1 } else { 2 },
                0,
                (car.position - car.position.round()).abs() < 0.05,
                true,
            );
        }
    }
    dev.set("floor", car.position.round());
    dev.set("direction", f64::from(direction));
    dev.set("speed", speed);
    dev.set("door_state", f64::from(door_state));
    dev.set("service_mode", 0.0);
    dev.set("fault_code", if trapped { 8.0 } else { 0.0 });
    dev.set_bool("door_zone", door_zone);
    dev.set_bool("occupied", car.occupied);
    dev.set_bool("alarm_button", trapped);
    dev.set_bool("power_loss", power_out.is_some());
    dev.set_bool("running", running);
}

/// The fire alarm panel.
fn fire_panel(dev: &mut SimDevice, env: &Env<'_>) {
    let (power_out, scenarios) = (env.power_out, env.scenarios);
    let fire = active(scenarios, ScenarioKind::Fire).is_some();
    dev.set_bool("normal", !fire);
    dev.set_bool("fire", fire);
    dev.set_bool("started", fire);
    dev.set_bool("zone1_fire", fire);
    for p in [
        "fault",
        "disabled",
        "supervisory",
        "feedback",
        "delay",
        "mains_fault",
        "battery_fault",
        "bus_fault",
        "manual",
        "reset",
        "zone2_fire",
        "zone3_fire",
        "zone4_fire",
        "zone1_fault",
        "zone2_fault",
        "zone3_fault",
        "zone4_fault",
    ] {
        dev.set_bool(p, false);
    }
    dev.set_bool("mains_fault", power_out.is_some());
}

/// Any other profile: its points drift.
fn generic(dev: &mut SimDevice, dt: f64, values: &mut [f64], noise: &mut dyn FnMut(f64) -> f64) {
    let profile = dev.profile.clone();
    for (i, p) in profile.points.iter().enumerate() {
        if dt > 0.0 && !p.is_bool() {
            values[i] = (values[i] + noise(0.5)).clamp(0.0, 1000.0);
        }
        if let Some(v) = values.get(i) {
            dev.image.write_point(
                p,
                if p.is_bool() {
                    f64::from(u8::from(*v > 0.5))
                } else {
                    *v
                },
            );
        }
    }
}
