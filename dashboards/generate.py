#!/usr/bin/env python3
"""Write propwatch's Grafana dashboards from the compact spec below.

Fourteen dashboards: seven subjects (estate overview, pump room, distribution room,
elevators, fire panel, alarms and alarm-load KPIs, and the fleet: every estate of a property
group side by side, for a group's Grafana over the history or metrics of many estates) in
two flavours, InfluxQL over the history propwatch
writes to InfluxDB (measurement = the profile's kind, tags site/room/device/profile, one field
per point; `alarm_events` for the alarm timeline) and PromQL over propwatch's /metrics
(`propwatch_point_<unit>{site,room,device,point}`, `propwatch_device_up`, `propwatch_alarm_*`).

Usage: python3 dashboards/generate.py [--out DIR]   (default: the directory of this script)
Writes DIR/influxql/*.json and DIR/prometheus/*.json. Python 3 standard library only; the
output is deterministic, so the committed JSON is what this script writes
(tests/dashboards.rs checks that).
"""

import argparse
import json
import os

INFLUX = {"type": "influxdb", "uid": "propwatch-influxql"}
PROM = {"type": "prometheus", "uid": "propwatch-prometheus"}

SUBJECTS = ["overview", "pump-room", "distribution-room", "elevators", "fire-panel", "alarms", "fleet"]
TITLES = {
    "overview": "Estate overview · 小区总览",
    "pump-room": "Pump room · 二次供水泵房",
    "distribution-room": "Distribution room · 配电室",
    "elevators": "Elevators · 电梯",
    "fire-panel": "Fire panel · 消防报警",
    "alarms": "Alarms and alarm load · 报警与报警负荷",
    "fleet": "Fleet: every estate · 集团各小区",
}

# --------------------------------------------------------------------------- field config


def thresholds(*steps):
    """steps: (value or None, colour) from the bottom up."""
    return {
        "mode": "absolute",
        "steps": [{"color": c, "value": v} for v, c in steps],
    }


GREEN = thresholds((None, "green"))


def value_map(pairs):
    """pairs: [(value, text, colour)]; booleans match both their number and their word."""
    options = {}
    for i, (v, text, colour) in enumerate(pairs):
        keys = [str(v)]
        if v in (0, 1) and len(pairs) == 2:
            keys.append("false" if v == 0 else "true")
        for k in keys:
            options[k] = {"color": colour, "index": i, "text": text}
    return [{"type": "value", "options": options}]


def bool_map(off, on, on_colour="red", off_colour="green"):
    return value_map([(0, off, off_colour), (1, on, on_colour)])


RUN_MAP = bool_map("停止 stopped", "运行 running", on_colour="green", off_colour="text")
CLOSED_MAP = bool_map("分 open", "合 closed", on_colour="green", off_colour="text")
ALARM_MAP = bool_map("正常 normal", "报警 alarm")
UP_MAP = bool_map("离线 offline", "在线 online", on_colour="green", off_colour="red")
DOOR_MAP = value_map(
    [(0, "关门 closed", "green"), (1, "开门 open", "blue"), (2, "开门中 opening", "light-blue"), (3, "关门中 closing", "light-green")]
)
DIRECTION_MAP = value_map([(0, "停止 stop", "text"), (1, "上行 up", "green"), (2, "下行 down", "blue")])
MODE_MAP = value_map(
    [(0, "正常 normal", "green"), (1, "检修 inspection", "yellow"), (2, "消防 fire", "red"), (3, "锁梯 locked", "purple")]
)
FAULT_MAP = value_map(
    [
        (0, "无 none", "green"),
        (1, "超速 overspeed", "red"),
        (2, "运行中开门 door open running", "red"),
        (3, "开门走梯 moving with door open", "red"),
        (4, "门关不上 door won't close", "orange"),
        (5, "冲顶 overtravel top", "red"),
        (6, "蹲底 overtravel bottom", "red"),
        (7, "非平层停梯 stopped off level", "orange"),
        (8, "困人 entrapment", "dark-red"),
    ]
)

# --------------------------------------------------------------------------- targets


def iq(query, alias=None, table=False):
    t = {"query": query, "rawQuery": True, "resultFormat": "table" if table else "time_series"}
    if alias:
        t["alias"] = alias
    return t


def pq(expr, legend=None, instant=False, table=False):
    t = {"expr": expr, "editorMode": "code", "range": not instant, "instant": instant}
    t["legendFormat"] = legend if legend else "__auto"
    if table:
        t["format"] = "table"
    return t


# --------------------------------------------------------------------------- panels


def panel(kind, title, targets, w, h, description="", unit=None, decimals=None, mappings=None, th=None, minv=None, maxv=None, custom=None, options=None, overrides=None, transformations=None, time_from=None):
    defaults = {"color": {"mode": "palette-classic"}}
    if kind in ("stat", "bargauge", "gauge", "state-timeline", "table"):
        defaults["color"] = {"mode": "thresholds"}
    if unit:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if minv is not None:
        defaults["min"] = minv
    if maxv is not None:
        defaults["max"] = maxv
    defaults["mappings"] = mappings or []
    defaults["thresholds"] = th or GREEN
    if custom:
        defaults["custom"] = custom
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "_w": w,
        "_h": h,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        p["transformations"] = transformations
    if time_from:
        p["timeFrom"] = time_from
    return p


LEGEND = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
LEGEND_TABLE = {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["lastNotNull", "min", "max"]}


def ts(title, targets, w=12, h=8, unit=None, stack=False, bars=False, step=False, th=None, th_line=False, legend=None, **kw):
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineInterpolation": "stepAfter" if step else "linear",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else (25 if stack else 8),
        "showPoints": "never",
        "spanNulls": True,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "line+area" if th_line else "off"},
        "axisSoftMin": 0 if (bars or stack) else None,
    }
    if custom["axisSoftMin"] is None:
        del custom["axisSoftMin"]
    opts = {"legend": legend or LEGEND, "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, targets, w, h, unit=unit, th=th, custom=custom, options=opts, **kw)


def stat(title, targets, w=4, h=4, unit=None, th=None, mappings=None, color_mode="background", text_mode="auto", **kw):
    opts = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": text_mode,
        "wideLayout": True,
        "showPercentChange": False,
    }
    return panel("stat", title, targets, w, h, unit=unit, th=th, mappings=mappings, options=opts, **kw)


def state(title, targets, mappings, w=12, h=8, **kw):
    opts = {
        "mergeValues": True,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    custom = {"fillOpacity": 75, "lineWidth": 0}
    return panel("state-timeline", title, targets, w, h, mappings=mappings, custom=custom, options=opts, **kw)


def bargauge(title, targets, w=8, h=8, unit=None, th=None, **kw):
    opts = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "displayMode": "gradient",
        "orientation": "horizontal",
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "auto",
        "sizing": "auto",
        "minVizHeight": 16,
        "minVizWidth": 8,
        "maxVizHeight": 300,
    }
    return panel("bargauge", title, targets, w, h, unit=unit, th=th, options=opts, **kw)


def table(title, targets, w=24, h=8, sort=None, **kw):
    opts = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False}}
    if sort:
        opts["sortBy"] = [{"displayName": sort[0], "desc": sort[1]}]
    custom = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False, "filterable": True}
    return panel("table", title, targets, w, h, custom=custom, options=opts, **kw)


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def by_name(name, **props):
    return {"matcher": {"id": "byName", "options": name}, "properties": [{"id": k, "value": v} for k, v in props.items()]}


def organize(exclude=(), rename=None, order=None):
    o = {"excludeByName": {k: True for k in exclude}, "renameByName": rename or {}, "indexByName": {}}
    if order:
        o["indexByName"] = {k: i for i, k in enumerate(order)}
    return {"id": "organize", "options": o}


# --------------------------------------------------------------------------- variables


def qvar(name, label, ds, query, multi=True, sort=1):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": ds,
        "query": query,
        "definition": query,
        "refresh": 1,
        "regex": "",
        "sort": sort,
        "multi": multi,
        "includeAll": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
        "options": [],
        "hide": 0,
    }


def custom_var(name, label, values):
    opts = [{"selected": False, "text": v, "value": v} for v in values]
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [{"selected": True, "text": "All", "value": "$__all"}] + opts,
        "hide": 0,
    }


def influx_vars(measurement, room=True, device=True):
    frm = f'FROM {measurement} ' if measurement else ""
    vs = [qvar("site", "Site · 小区", INFLUX, f'SHOW TAG VALUES {frm}WITH KEY = "site"', multi=False)]
    if room:
        vs.append(qvar("room", "Room · 机房", INFLUX, f'SHOW TAG VALUES {frm}WITH KEY = "room" WHERE "site" =~ /^$site$/'))
    if device:
        vs.append(
            qvar("device", "Device · 设备", INFLUX, f'SHOW TAG VALUES {frm}WITH KEY = "device" WHERE "site" =~ /^$site$/ AND "room" =~ /^$room$/')
        )
    return vs


def prom_vars(selector, room=True, device=True):
    """selector: the matchers (besides site/room) that pick this dashboard's devices."""
    vs = [qvar("site", "Site · 小区", PROM, "label_values(propwatch_device_up, site)", multi=False)]
    if room:
        vs.append(qvar("room", "Room · 机房", PROM, f'label_values({metric_sel(selector, site=True)}, room)'))
    if device:
        vs.append(qvar("device", "Device · 设备", PROM, f'label_values({metric_sel(selector, site=True, room=True)}, device)'))
    return vs


def metric_sel(selector, site=False, room=False):
    """selector like 'propwatch_point_megapascals{point="inlet_pressure"}' with site/room added."""
    name, _, body = selector.partition("{")
    body = body.rstrip("}")
    matchers = []
    if site:
        matchers.append('site=~"$site"')
    if room:
        matchers.append('room=~"$room"')
    if body:
        matchers.append(body)
    return f'{name}{{{", ".join(matchers)}}}'


# --------------------------------------------------------------------------- annotations


def influx_annotations(room_filter=False):
    where = '"site" =~ /^$site$/'
    if room_filter:
        where += ' AND "room" =~ /^$room$/'

    def anno(name, colour, kinds, enable=True):
        q = f'SELECT "text", "kind", "plan", "severity", "device" FROM "alarm_events" WHERE {where} AND "kind" =~ /^({kinds})$/ AND $timeFilter'
        return {
            "name": name,
            "datasource": INFLUX,
            "enable": enable,
            "hide": False,
            "iconColor": colour,
            "target": {
                "refId": "Anno",
                "query": q,
                "rawQuery": True,
                "fromAnnotations": True,
                "textEditor": True,
                "textColumn": "text",
                "titleColumn": "kind",
                "tagsColumn": "plan,severity,device",
            },
        }

    return [
        anno("Incidents · 事件", "red", "incident_opened|incident_acked|incident_arrived|incident_resolved"),
        anno("Alarms · 报警", "orange", "alarm_raised|alarm_normal|alarm_acked"),
    ]


def prom_annotations(device_filter=False):
    dev = ', device=~"$device"' if device_filter else ""
    return [
        {
            "name": "Incident opened · 事件启动",
            "datasource": PROM,
            "enable": True,
            "hide": False,
            "iconColor": "red",
            "target": {"refId": "Anno", "expr": "(propwatch_incidents_open - propwatch_incidents_open offset 1m) > 0", "interval": "60s"},
            "titleFormat": "incident opened: {{plan}}",
            "textFormat": "{{plan}}",
            "tagKeys": "plan",
            "useValueForTime": False,
        },
        {
            "name": "Alarm active · 报警中",
            "datasource": PROM,
            "enable": True,
            "hide": False,
            "iconColor": "orange",
            "target": {"refId": "Anno", "expr": f'propwatch_alarm_active{{site=~"$site"{dev}}} == 1', "interval": "60s"},
            "titleFormat": "{{rule}} · {{device}}",
            "textFormat": "{{plan}} {{severity}}",
            "tagKeys": "plan,severity,device",
            "useValueForTime": False,
        },
    ]


# --------------------------------------------------------------------------- InfluxQL dashboards

W = '"site" =~ /^$site$/ AND "room" =~ /^$room$/ AND "device" =~ /^$device$/ AND $timeFilter'
WS = '"site" =~ /^$site$/ AND $timeFilter'
TBY = 'GROUP BY time($__interval), "device" fill(null)'
TBYP = 'GROUP BY time($__interval), "device" fill(previous)'


def sel(fields, fn="mean"):
    """fields: [(field, alias)] -> 'mean("f") AS "alias", ...'"""
    return ", ".join(f'{fn}("{f}") AS "{a}"' for f, a in fields)


def per_minute(measurement, field):
    return iq(f'SELECT count("{field}") FROM "{measurement}" WHERE {W} GROUP BY time(1m), "device" fill(0)', alias="$tag_device")


def influx_overview():
    m_w = '"site" =~ /^$site$/ AND "room" =~ /^$room$/ AND $timeFilter'
    panels = [
        row("Now · 当前"),
        stat("Alarms raised · 报警次数", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE \"kind\" = 'alarm_raised' AND {WS}")], w=4,
             th=thresholds((None, "green"), (1, "orange"), (10, "red")), description="Alarm occurrences raised in the dashboard's time range."),
        stat("Incidents opened · 事件", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE \"kind\" = 'incident_opened' AND {WS}")], w=4,
             th=thresholds((None, "green"), (1, "red")), description="Incidents opened in the time range (each starts an emergency plan)."),
        stat("Fire panel · 火警", [iq(f'SELECT last("fire") AS "fire" FROM "fire_panel" WHERE {m_w} GROUP BY "device"', alias="$tag_device")], w=4,
             mappings=bool_map("正常 normal", "火警 FIRE")),
        stat("Incoming voltage · 进线电压 (Ua)", [iq(f'SELECT last("ua") FROM "power_meter" WHERE {m_w} GROUP BY "device"', alias="$tag_device")], w=4, unit="volt",
             th=thresholds((None, "red"), (171.6, "orange"), (187, "green"), (242, "red"))),
        stat("Domestic tank · 生活水箱", [iq(f'SELECT last("tank_level") FROM "pump_room" WHERE {m_w} GROUP BY "device"', alias="$tag_device")], w=4, unit="lengthm",
             th=thresholds((None, "red"), (0.5, "orange"), (1.0, "green"))),
        stat("Winding temperature · 变压器绕组温度", [iq(f'SELECT {sel([("transformer_temp_a", "A"), ("transformer_temp_b", "B"), ("transformer_temp_c", "C")], "last")} FROM "distribution_room" WHERE {m_w} GROUP BY "device"', alias="$tag_device $col")],
             w=4, unit="celsius", th=thresholds((None, "green"), (130, "orange"), (150, "red"))),
        row("Trends · 趋势"),
        ts("Outlet pressures · 出水压力", [iq(f'SELECT {sel([("outlet_pressure_low", "低区 low"), ("outlet_pressure_mid", "中区 mid"), ("outlet_pressure_high", "高区 high"), ("inlet_pressure", "进水 inlet")])} FROM "pump_room" WHERE {m_w} {TBY}', alias="$tag_device $col")], unit="suffix: MPa"),
        ts("Tank levels · 水箱液位", [iq(f'SELECT {sel([("tank_level", "生活水箱 domestic"), ("fire_tank_level", "消防水箱 fire")])} FROM "pump_room" WHERE {m_w} {TBY}', alias="$tag_device $col")], unit="lengthm"),
        ts("Phase voltages · 相电压", [iq(f'SELECT {sel([("ua", "Ua"), ("ub", "Ub"), ("uc", "Uc")])} FROM "power_meter" WHERE {m_w} {TBY}', alias="$tag_device $col")], unit="volt"),
        ts("Estate load · 总负荷",
           [iq(f'SELECT sum("p") AS "total" FROM (SELECT mean("p_total") AS "p" FROM "power_meter" WHERE {m_w} GROUP BY time($__interval), "device") WHERE $timeFilter GROUP BY time($__interval) fill(null)', alias="总负荷 total")],
           unit="kwatt", description="Sum of the incoming lines' active power."),
        ts("Readings per minute · 数据上报", [
            iq(f'SELECT count("inlet_pressure") FROM "pump_room" WHERE {m_w} GROUP BY time(1m), "device" fill(0)', alias="$tag_device"),
            iq(f'SELECT count("ua") FROM "power_meter" WHERE {m_w} GROUP BY time(1m), "device" fill(0)', alias="$tag_device"),
            iq(f'SELECT count("dc_voltage") FROM "distribution_room" WHERE {m_w} GROUP BY time(1m), "device" fill(0)', alias="$tag_device"),
            iq(f'SELECT count("floor") FROM "elevator" WHERE {m_w} GROUP BY time(1m), "device" fill(0)', alias="$tag_device"),
            iq(f'SELECT count("fire") FROM "fire_panel" WHERE {m_w} GROUP BY time(1m), "device" fill(0)', alias="$tag_device"),
        ], w=24, description="Rows written per device per minute: a device that stops answering drops to 0 (the history holds only good readings).", legend=LEGEND_TABLE),
        row("Lifts and fire · 电梯与消防"),
        state("Lift faults · 电梯故障代码", [iq(f'SELECT last("fault_code") FROM "elevator" WHERE {m_w} {TBYP}', alias="$tag_device")], FAULT_MAP),
        state("Fire panel · 火灾报警控制器", [iq(f'SELECT last("fire") AS "火警 fire", last("fault") AS "故障 fault", last("mains_fault") AS "主电 mains" FROM "fire_panel" WHERE {m_w} {TBYP}', alias="$tag_device $col")], ALARM_MAP),
        row("Alarm timeline · 报警记录"),
        table("Latest events · 最新事件", [iq(f'SELECT "kind", "plan", "severity", "room", "device", "text" FROM "alarm_events" WHERE {WS} ORDER BY time DESC LIMIT 50', table=True)], h=9),
    ]
    return influx_vars(None, device=False), panels, influx_annotations()


def influx_pump_room():
    m = '"pump_room"'
    last = lambda f: iq(f'SELECT last("{f}") FROM {m} WHERE {W} GROUP BY "device"', alias="$tag_device")
    panels = [
        row("Now · 当前"),
        stat("Inlet pressure · 市政进水压力", [last("inlet_pressure")], unit="suffix: MPa", th=thresholds((None, "red"), (0.05, "orange"), (0.1, "green"))),
        stat("Domestic tank · 生活水箱", [last("tank_level")], unit="lengthm", th=thresholds((None, "red"), (0.5, "orange"), (1.0, "green"))),
        stat("Fire tank · 消防水箱", [last("fire_tank_level")], unit="lengthm", th=thresholds((None, "red"), (3.0, "green"))),
        stat("Hydrant pressure · 消火栓压力", [last("hydrant_pressure")], unit="suffix: MPa", th=thresholds((None, "red"), (0.1, "green"))),
        stat("Pumps · 水泵", [iq(f'SELECT {sel([("pump1_run", "1#"), ("pump2_run", "2#"), ("pump3_run", "3#")], "last")} FROM {m} WHERE {W} GROUP BY "device"', alias="$tag_device $col")], mappings=RUN_MAP),
        stat("Flow · 瞬时流量", [last("flow_rate")], unit="suffix: m³/h", color_mode="value"),
        row("Pressures and levels · 压力与液位"),
        ts("Outlet pressures · 出水压力", [iq(f'SELECT {sel([("outlet_pressure_low", "低区 low"), ("outlet_pressure_mid", "中区 mid"), ("outlet_pressure_high", "高区 high"), ("inlet_pressure", "进水 inlet"), ("hydrant_pressure", "消火栓 hydrant")])} FROM {m} WHERE {W} {TBY}', alias="$tag_device $col")], unit="suffix: MPa"),
        ts("Levels · 液位", [iq(f'SELECT {sel([("tank_level", "生活水箱 domestic tank"), ("fire_tank_level", "消防水箱 fire tank"), ("sump_level", "集水坑 sump")])} FROM {m} WHERE {W} {TBY}', alias="$tag_device $col")], unit="lengthm"),
        row("Pumps · 水泵"),
        ts("Pump frequency · 水泵频率", [iq(f'SELECT {sel([("pump1_freq", "1#"), ("pump2_freq", "2#"), ("pump3_freq", "3#")])} FROM {m} WHERE {W} {TBY}', alias="$tag_device $col")], unit="hertz", w=8),
        ts("Pump current · 水泵电流", [iq(f'SELECT {sel([("pump1_current", "1#"), ("pump2_current", "2#"), ("pump3_current", "3#")])} FROM {m} WHERE {W} {TBY}', alias="$tag_device $col")], unit="amp", w=8),
        ts("Flow · 出水流量", [iq(f'SELECT mean("flow_rate") FROM {m} WHERE {W} {TBY}', alias="$tag_device")], unit="suffix: m³/h", w=8),
        state("Pump run · 水泵运行", [iq(f'SELECT {sel([("pump1_run", "1# run"), ("pump2_run", "2# run"), ("pump3_run", "3# run")], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")], RUN_MAP, w=8),
        state("Pump fault · 水泵故障", [iq(f'SELECT {sel([("pump1_fault", "1# fault"), ("pump2_fault", "2# fault"), ("pump3_fault", "3# fault")], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")], ALARM_MAP, w=8),
        state("Pump in service · 水泵投入", [iq(f'SELECT {sel([("pump1_enabled", "1#"), ("pump2_enabled", "2#"), ("pump3_enabled", "3#")], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")], bool_map("退出 out", "投入 in", on_colour="green", off_colour="orange"), w=8),
        ts("Water delivered per hour · 每小时出水量", [iq(f'SELECT spread("water_total") FROM {m} WHERE {W} GROUP BY time(1h), "device" fill(null)', alias="$tag_device")], unit="m3", bars=True, w=12,
           description="Increase of the cumulative outlet meter per hour."),
        stat("Water delivered · 出水量 (range)", [iq(f'SELECT spread("water_total") FROM {m} WHERE {W} GROUP BY "device"', alias="$tag_device")], unit="m3", w=12, h=8, color_mode="value"),
        row("Water quality and room · 水质与环境"),
        ts("Residual chlorine · 余氯", [iq(f'SELECT mean("chlorine") FROM {m} WHERE {W} {TBY}', alias="$tag_device")], unit="suffix: mg/L", w=6,
           th=thresholds((None, "red"), (0.05, "green"), (2.0, "red")), th_line=True),
        ts("Turbidity · 浊度", [iq(f'SELECT mean("turbidity") FROM {m} WHERE {W} {TBY}', alias="$tag_device")], unit="suffix: NTU", w=6,
           th=thresholds((None, "green"), (1.0, "red")), th_line=True),
        ts("Room temperature and humidity · 泵房温湿度", [iq(f'SELECT {sel([("temperature", "温度 °C"), ("humidity", "湿度 %RH")])} FROM {m} WHERE {W} {TBY}', alias="$tag_device $col")], w=12),
        state("Flood, smoke, door · 水浸/烟感/门磁", [iq(f'SELECT {sel([("flood", "水浸 flood"), ("flood_sensor", "集水坑探头 sump sensor"), ("smoke", "烟感 smoke"), ("door_open", "门磁 door open")], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")], ALARM_MAP, w=12),
        ts("Readings per minute · 数据上报", [per_minute("pump_room", "inlet_pressure")], w=12, description="Rows written per minute: 0 while the controller does not answer."),
    ]
    return influx_vars('"pump_room"'), panels, influx_annotations(room_filter=True)


def influx_distribution_room():
    pm, sg = '"power_meter"', '"distribution_room"'
    panels = [
        row("Now · 当前"),
        stat("Phase voltage · 相电压", [iq(f'SELECT {sel([("ua", "Ua"), ("ub", "Ub"), ("uc", "Uc")], "last")} FROM {pm} WHERE {W} GROUP BY "device"', alias="$tag_device $col")], w=6, unit="volt",
             th=thresholds((None, "red"), (171.6, "orange"), (187, "green"), (242, "red"))),
        stat("Load · 负荷", [iq(f'SELECT last("p_total") FROM {pm} WHERE {W} GROUP BY "device"', alias="$tag_device")], w=4, unit="kwatt", color_mode="value"),
        stat("Power factor · 功率因数", [iq(f'SELECT last("pf") FROM {pm} WHERE {W} GROUP BY "device"', alias="$tag_device")], w=4, decimals=2,
             th=thresholds((None, "orange"), (0.9, "green"))),
        stat("Winding temperature · 绕组温度", [iq(f'SELECT {sel([("transformer_temp_a", "A"), ("transformer_temp_b", "B"), ("transformer_temp_c", "C")], "last")} FROM {sg} WHERE {W} GROUP BY "device"', alias="$tag_device $col")], w=5, unit="celsius",
             th=thresholds((None, "green"), (130, "orange"), (150, "red"))),
        stat("ATS · 双电源", [iq(f'SELECT {sel([("ats_mains", "市电 mains"), ("ats_generator", "发电 generator")], "last")} FROM {sg} WHERE {W} GROUP BY "device"', alias="$col")], w=5, mappings=CLOSED_MAP),
        row("Incoming lines · 进线电表"),
        ts("Phase voltages · 相电压", [iq(f'SELECT {sel([("ua", "Ua"), ("ub", "Ub"), ("uc", "Uc")])} FROM {pm} WHERE {W} {TBY}', alias="$tag_device $col")], unit="volt", w=8),
        ts("Line voltages · 线电压", [iq(f'SELECT {sel([("uab", "Uab"), ("ubc", "Ubc"), ("uca", "Uca")])} FROM {pm} WHERE {W} {TBY}', alias="$tag_device $col")], unit="volt", w=8),
        ts("Phase currents · 相电流", [iq(f'SELECT {sel([("ia", "Ia"), ("ib", "Ib"), ("ic", "Ic")])} FROM {pm} WHERE {W} {TBY}', alias="$tag_device $col")], unit="amp", w=8),
        ts("Active power · 有功功率", [iq(f'SELECT mean("p_total") FROM {pm} WHERE {W} {TBY}', alias="$tag_device")], unit="kwatt", stack=True, w=8),
        ts("Power factor · 功率因数", [iq(f'SELECT mean("pf") FROM {pm} WHERE {W} {TBY}', alias="$tag_device")], decimals=2, w=8,
           th=thresholds((None, "orange"), (0.9, "transparent")), th_line=True),
        ts("Frequency · 频率", [iq(f'SELECT mean("freq") FROM {pm} WHERE {W} {TBY}', alias="$tag_device")], unit="hertz", w=8),
        ts("Energy per hour · 每小时用电", [iq(f'SELECT spread("energy_import") FROM {pm} WHERE {W} GROUP BY time(1h), "device" fill(null)', alias="$tag_device")], unit="kwatth", bars=True, stack=True, w=16),
        stat("Energy · 用电量 (range)", [iq(f'SELECT spread("energy_import") FROM {pm} WHERE {W} GROUP BY "device"', alias="$tag_device")], unit="kwatth", w=8, h=8, color_mode="value"),
        row("Switchgear · 开关柜与变压器"),
        ts("Transformer winding temperature · 变压器绕组温度", [iq(f'SELECT {sel([("transformer_temp_a", "A"), ("transformer_temp_b", "B"), ("transformer_temp_c", "C")])} FROM {sg} WHERE {W} {TBY}', alias="$tag_device $col")], unit="celsius",
           th=thresholds((None, "transparent"), (130, "orange"), (150, "red")), th_line=True),
        ts("DC panel voltage · 直流屏电压", [iq(f'SELECT mean("dc_voltage") FROM {sg} WHERE {W} {TBY}', alias="$tag_device")], unit="volt",
           th=thresholds((None, "red"), (198, "transparent")), th_line=True),
        state("Breakers · 断路器", [iq(f'SELECT {sel([("incoming1_closed", "1#进线 incoming 1"), ("incoming2_closed", "2#进线 incoming 2"), ("bus_tie_closed", "母联 bus tie")], "last")} FROM {sg} WHERE {W} {TBYP}', alias="$tag_device $col")], CLOSED_MAP),
        state("ATS and generator · 双电源与发电机", [iq(f'SELECT {sel([("ats_mains", "ATS 市电 mains"), ("ats_generator", "ATS 发电 generator"), ("generator_running", "发电机运行 generator running")], "last")} FROM {sg} WHERE {W} {TBYP}', alias="$tag_device $col")], CLOSED_MAP),
        state("Trips and faults · 跳闸与故障", [iq(f'SELECT {sel([("incoming1_trip", "1#进线跳闸 trip 1"), ("incoming2_trip", "2#进线跳闸 trip 2"), ("generator_fault", "发电机故障 generator fault"), ("dc_fault", "直流屏故障 DC fault")], "last")} FROM {sg} WHERE {W} {TBYP}', alias="$tag_device $col")], ALARM_MAP),
        state("Flood, smoke, door · 水浸/烟感/门磁", [iq(f'SELECT {sel([("flood", "水浸 flood"), ("smoke", "烟感 smoke"), ("door_open", "门磁 door open")], "last")} FROM {sg} WHERE {W} {TBYP}', alias="$tag_device $col")], ALARM_MAP),
        ts("Room temperature and humidity · 配电室温湿度", [iq(f'SELECT {sel([("room_temperature", "温度 °C"), ("room_humidity", "湿度 %RH")])} FROM {sg} WHERE {W} {TBY}', alias="$tag_device $col")]),
        ts("Readings per minute · 数据上报", [per_minute("power_meter", "ua"), per_minute("distribution_room", "dc_voltage")], description="Rows written per device per minute: 0 while a device does not answer."),
    ]
    return influx_vars("/^(power_meter|distribution_room)$/"), panels, influx_annotations(room_filter=True)


def influx_elevators():
    m = '"elevator"'
    status = (
        f'SELECT last("floor") AS "floor", last("direction") AS "direction", last("door_state") AS "door", last("service_mode") AS "mode", '
        f'last("fault_code") AS "fault", last("occupied") AS "occupied", last("alarm_button") AS "alarm button", last("power_loss") AS "power loss" '
        f'FROM {m} WHERE {W} GROUP BY "room", "device"'
    )
    panels = [
        row("Now · 当前"),
        table("Lift status · 电梯状态", [iq(status, table=True)], h=8,
              overrides=[by_name("direction", mappings=DIRECTION_MAP), by_name("door", mappings=DOOR_MAP), by_name("mode", mappings=MODE_MAP),
                         by_name("fault", mappings=FAULT_MAP), by_name("occupied", mappings=bool_map("无人 empty", "有人 occupied", on_colour="blue", off_colour="text")),
                         by_name("alarm button", mappings=ALARM_MAP), by_name("power loss", mappings=ALARM_MAP)],
              transformations=[organize(exclude=["Time"])]),
        row("Travel · 运行"),
        ts("Floor · 楼层", [iq(f'SELECT last("floor") FROM {m} WHERE {W} {TBYP}', alias="$tag_device")], step=True, decimals=0),
        ts("Speed · 运行速度", [iq(f'SELECT max("speed") FROM {m} WHERE {W} {TBY}', alias="$tag_device")], unit="velocityms"),
        state("Direction · 运行方向", [iq(f'SELECT last("direction") FROM {m} WHERE {W} {TBYP}', alias="$tag_device")], DIRECTION_MAP),
        state("Doors · 门状态", [iq(f'SELECT last("door_state") FROM {m} WHERE {W} {TBYP}', alias="$tag_device")], DOOR_MAP),
        row("Safety · 安全"),
        state("Fault code · 故障代码", [iq(f'SELECT last("fault_code") FROM {m} WHERE {W} {TBYP}', alias="$tag_device")], FAULT_MAP),
        state("Service mode · 服务模式", [iq(f'SELECT last("service_mode") FROM {m} WHERE {W} {TBYP}', alias="$tag_device")], MODE_MAP),
        state("Alarm button, power loss · 一键报警/停电", [iq(f'SELECT {sel([("alarm_button", "一键报警 alarm button"), ("power_loss", "停电 power loss")], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")], ALARM_MAP),
        state("Occupied, level · 轿厢有人/平层", [iq(f'SELECT {sel([("occupied", "有人 occupied"), ("door_zone", "平层 level")], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")],
              bool_map("否 no", "是 yes", on_colour="blue", off_colour="text")),
        ts("Readings per minute · 数据上报", [per_minute("elevator", "floor")], w=24, description="Rows written per lift per minute (Modbus terminals poll every second, MQTT terminals report every 5 s): 0 while a terminal is silent."),
    ]
    return influx_vars('"elevator"'), panels, influx_annotations(room_filter=True)


def influx_fire_panel():
    m = '"fire_panel"'
    flags = [("normal", "正常监视 normal"), ("fire", "火警 fire"), ("started", "启动 started"), ("feedback", "反馈 feedback"), ("supervisory", "监管 supervisory"), ("delay", "延时 delay"), ("manual", "手动 manual"), ("reset", "复位 reset")]
    panels = [
        row("Now · 当前"),
        stat("Fire · 火警", [iq(f'SELECT {sel([("fire", "火警 fire"), ("started", "启动 started"), ("feedback", "反馈 feedback")], "last")} FROM {m} WHERE {W} GROUP BY "device"', alias="$col")], w=8,
             mappings=bool_map("否 no", "是 YES")),
        stat("Faults · 故障", [iq(f'SELECT {sel([("fault", "故障 fault"), ("bus_fault", "总线 bus"), ("disabled", "屏蔽 disabled")], "last")} FROM {m} WHERE {W} GROUP BY "device"', alias="$col")], w=8,
             mappings=bool_map("正常 ok", "故障 FAULT", on_colour="orange")),
        stat("Power supply · 电源", [iq(f'SELECT {sel([("mains_fault", "主电 mains"), ("battery_fault", "备电 battery")], "last")} FROM {m} WHERE {W} GROUP BY "device"', alias="$col")], w=8,
             mappings=bool_map("正常 ok", "故障 FAULT", on_colour="orange")),
        row("History · 历史"),
        state("Panel status · 控制器状态", [iq(f'SELECT {sel(flags, "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")], bool_map("否 no", "是 yes", on_colour="red", off_colour="text"), w=24, h=9),
        state("Zones: fire · 分区火警", [iq(f'SELECT {sel([(f"zone{z}_fire", f"{z}区 zone {z}") for z in range(1, 5)], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")], ALARM_MAP),
        state("Zones: fault · 分区故障", [iq(f'SELECT {sel([(f"zone{z}_fault", f"{z}区 zone {z}") for z in range(1, 5)], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")], bool_map("正常 ok", "故障 fault", on_colour="orange")),
        state("Power and bus · 主电/备电/总线", [iq(f'SELECT {sel([("mains_fault", "主电故障 mains"), ("battery_fault", "备电故障 battery"), ("bus_fault", "总线故障 bus"), ("fault", "故障 fault"), ("disabled", "屏蔽 disabled")], "last")} FROM {m} WHERE {W} {TBYP}', alias="$tag_device $col")],
              bool_map("正常 ok", "故障 fault", on_colour="orange")),
        ts("Readings per minute · 数据上报", [per_minute("fire_panel", "fire")], description="Rows written per minute: 0 while the panel's converter does not answer."),
        table("Fire events · 火警事件", [iq(f"SELECT \"kind\", \"severity\", \"room\", \"device\", \"text\" FROM \"alarm_events\" WHERE \"plan\" = 'fire' AND {WS} ORDER BY time DESC LIMIT 100", table=True)], h=9,
              description="Timeline of the fire plan: every fire alarm (panel, smoke detectors) and its incident."),
    ]
    return influx_vars('"fire_panel"'), panels, influx_annotations(room_filter=True)


def influx_alarms():
    f = '"site" =~ /^$site$/ AND "plan" =~ /^$plan$/ AND "severity" =~ /^$severity$/ AND $timeFilter'
    raised = f"\"kind\" = 'alarm_raised' AND {f}"
    panels = [
        row("Load · 报警负荷"),
        stat("Alarms raised · 报警次数", [iq(f'SELECT count("text") FROM "alarm_events" WHERE {raised}')], w=6, th=thresholds((None, "green"), (1, "orange"), (144, "red")),
             description="Alarm occurrences raised in the time range."),
        stat("Incidents opened · 事件", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE \"kind\" = 'incident_opened' AND {f}")], w=6, th=thresholds((None, "green"), (1, "red"))),
        stat("Busiest 10 minutes · 10分钟最多报警", [iq(f'SELECT max("n") FROM (SELECT count("text") AS "n" FROM "alarm_events" WHERE {raised} GROUP BY time(10m)) WHERE $timeFilter')], w=6,
             th=thresholds((None, "green"), (2, "orange"), (10, "red")), description="EEMUA 191: more than 10 alarms in 10 minutes is an alarm flood."),
        bargauge("Incident lifecycle · 事件处理", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE \"kind\" =~ /^incident_(opened|acked|arrived|normal|resolved)$/ AND {f} GROUP BY \"kind\"", alias="$tag_kind")], w=6, h=4),
        ts("Alarms per 10 minutes · 每10分钟报警数", [iq(f'SELECT count("text") FROM "alarm_events" WHERE {raised} GROUP BY time(10m) fill(0)', alias="alarms")], bars=True, w=24,
           th=thresholds((None, "transparent"), (10, "red")), th_line=True, description="EEMUA 191 / ISA-18.2 alarm rate: above 10 per 10 minutes (red) the duty engineer is in an alarm flood."),
        ts("Alarms per hour by plan · 每小时报警 (按预案)", [iq(f'SELECT count("text") FROM "alarm_events" WHERE {raised} GROUP BY time(1h), "plan" fill(0)', alias="$tag_plan")], bars=True, stack=True),
        ts("Alarms per day by plan · 每日报警 (按预案, 7 天)", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE {raised} GROUP BY time(1d), \"plan\" fill(0) tz('Asia/Shanghai')", alias="$tag_plan")], bars=True, stack=True, time_from="7d",
           description="Days in China Standard Time."),
        bargauge("Alarms by severity · 按等级", [iq(f'SELECT count("text") FROM "alarm_events" WHERE {raised} GROUP BY "severity"', alias="$tag_severity")]),
        bargauge("Incidents by plan · 事件 (按预案)", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE \"kind\" = 'incident_opened' AND {f} GROUP BY \"plan\"", alias="$tag_plan")]),
        table("Most frequent alarm sources · 报警最多的设备", [iq(f'SELECT top("raised", "device", "plan", 10) AS "raised" FROM (SELECT count("text") AS "raised" FROM "alarm_events" WHERE {raised} GROUP BY "device", "plan") WHERE $timeFilter', table=True)], w=8, sort=("raised", True),
              transformations=[organize(exclude=["Time"])], description="Top 10 device/plan pairs by alarms raised: chattering sources show up here."),
        row("Notifications · 通知"),
        ts("Notifications per hour · 每小时通知", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE \"kind\" =~ /^notification_/ AND {f} GROUP BY time(1h), \"kind\" fill(0)", alias="$tag_kind")], bars=True, stack=True, w=16),
        bargauge("Notifications by outcome · 通知结果", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE \"kind\" =~ /^notification_/ AND {f} GROUP BY \"kind\"", alias="$tag_kind")],
                 description="notification_sent / _failed / _failover / _expired / _nobody events on the incidents' timelines."),
        row("Timeline · 事件时间线"),
        bargauge("Events by kind · 按类型", [iq(f'SELECT count("text") FROM "alarm_events" WHERE {f} GROUP BY "kind"', alias="$tag_kind")], h=10),
        table("Timeline · 时间线", [iq(f'SELECT "kind", "plan", "severity", "room", "device", "text", "incident", "by" FROM "alarm_events" WHERE {f} ORDER BY time DESC LIMIT 200', table=True)], w=16, h=10),
    ]
    vs = [
        qvar("site", "Site · 小区", INFLUX, 'SHOW TAG VALUES FROM "alarm_events" WITH KEY = "site"', multi=False),
        qvar("plan", "Plan · 预案", INFLUX, 'SHOW TAG VALUES FROM "alarm_events" WITH KEY = "plan" WHERE "site" =~ /^$site$/'),
        custom_var("severity", "Severity · 等级", ["P1", "P2", "P3"]),
    ]
    return vs, panels, influx_annotations()


# --------------------------------------------------------------------------- PromQL dashboards

S = 'site=~"$site", room=~"$room", device=~"$device"'


def pt(unit, points, extra=""):
    """A point gauge selector: propwatch_point_<unit>{site/room/device, point=~"..."}."""
    op = "=~" if any(c in points for c in "|.*[") else "="
    return f'propwatch_point_{unit}{{{S}, point{op}"{points}"{extra}}}'


def up_panel(w=12, h=8, matchers=S):
    return state("Device availability · 设备在线", [pq(f"propwatch_device_up{{{matchers}}}", "{{room}} · {{device}}")], UP_MAP, w=w, h=h,
                 description="propwatch_device_up: 1 while the device answers (Modbus) or reports (MQTT).")


def prom_overview():
    so = 'site=~"$site", room=~"$room"'
    panels = [
        row("Now · 当前"),
        stat("Devices online · 在线设备", [pq(f"sum(propwatch_device_up{{{so}}})", "online", instant=True), pq(f"count(propwatch_device_up{{{so}}})", "total", instant=True)], w=4, color_mode="value"),
        stat("Active alarms · 当前报警", [pq('sum(propwatch_alarm_active{site=~"$site"})', instant=True)], w=4, th=thresholds((None, "green"), (1, "red"))),
        stat("Open incidents · 未关闭事件", [pq("sum(propwatch_incidents_open)", instant=True)], w=4, th=thresholds((None, "green"), (1, "red"))),
        stat("Alarms raised, 24 h · 24小时报警", [pq("sum(increase(propwatch_alarms_raised_total[24h]))", instant=True)], w=4, decimals=0, th=thresholds((None, "green"), (1, "orange"), (144, "red"))),
        stat("Fire panel · 火警", [pq(f'max(propwatch_point_value{{{so}, point="fire"}})', instant=True)], w=4, mappings=bool_map("正常 normal", "火警 FIRE")),
        stat("Max winding temperature · 绕组最高温度", [pq(f'max(propwatch_point_celsius{{{so}, point=~"transformer_temp_.*"}})', instant=True)], w=4, unit="celsius", th=thresholds((None, "green"), (130, "orange"), (150, "red"))),
        table("Active alarms · 当前报警", [pq('propwatch_alarm_active{site=~"$site"} == 1', instant=True, table=True)], h=7, sort=("severity", False),
              transformations=[organize(exclude=["Time", "Value", "__name__", "instance", "job"], order=["severity", "plan", "device", "rule", "site"])]),
        up_panel(w=24, h=9, matchers=so),
        row("Trends · 趋势"),
        ts("Outlet pressures · 出水压力", [pq(f'propwatch_point_megapascals{{{so}, point=~"outlet_pressure_.*|inlet_pressure"}}', "{{device}} {{point}}")], unit="suffix: MPa"),
        ts("Tank levels · 水箱液位", [pq(f'propwatch_point_meters{{{so}, point=~"tank_level|fire_tank_level"}}', "{{device}} {{point}}")], unit="lengthm"),
        ts("Phase voltages · 相电压", [pq(f'propwatch_point_volts{{{so}, point=~"ua|ub|uc"}}', "{{device}} {{point}}")], unit="volt"),
        ts("Estate load · 总负荷", [pq(f'sum(propwatch_point_kilowatts{{{so}, point="p_total"}})', "total")], unit="kwatt"),
        stat("Lifts moving · 运行中电梯", [pq(f'sum(propwatch_point_meters_per_second{{{so}, point="speed"}} > bool 0.05)', instant=True)], w=4, color_mode="value"),
        state("Lift faults · 电梯故障代码", [pq(f'propwatch_point_value{{{so}, point="fault_code"}}', "{{device}}")], FAULT_MAP, w=20),
        row("propwatch · 采集系统"),
        ts("Samples per second · 采样速率", [pq("sum by (source) (rate(propwatch_samples_total[$__rate_interval]))", "{{source}}")], unit="short", w=8),
        ts("Modbus requests by result · Modbus 请求", [pq("sum by (result) (rate(propwatch_modbus_requests_total[$__rate_interval]))", "{{result}}")], unit="reqps", w=8),
        ts("History writes · 历史写入", [
            pq("rate(propwatch_influx_lines_written_total[$__rate_interval])", "lines written/s"),
            pq("propwatch_influx_spool_lines", "spooled lines"),
        ], w=8, description="Lines written to InfluxDB per second, and lines waiting in the on-disk spool while the database is unreachable."),
    ]
    vs = [
        qvar("site", "Site · 小区", PROM, "label_values(propwatch_device_up, site)", multi=False),
        qvar("room", "Room · 机房", PROM, 'label_values(propwatch_device_up{site=~"$site"}, room)'),
    ]
    return vs, panels, prom_annotations()


def prom_pump_room():
    panels = [
        row("Now · 当前"),
        stat("Inlet pressure · 市政进水压力", [pq(pt("megapascals", "inlet_pressure"), "{{device}}", instant=True)], unit="suffix: MPa", th=thresholds((None, "red"), (0.05, "orange"), (0.1, "green"))),
        stat("Domestic tank · 生活水箱", [pq(pt("meters", "tank_level"), "{{device}}", instant=True)], unit="lengthm", th=thresholds((None, "red"), (0.5, "orange"), (1.0, "green"))),
        stat("Fire tank · 消防水箱", [pq(pt("meters", "fire_tank_level"), "{{device}}", instant=True)], unit="lengthm", th=thresholds((None, "red"), (3.0, "green"))),
        stat("Hydrant pressure · 消火栓压力", [pq(pt("megapascals", "hydrant_pressure"), "{{device}}", instant=True)], unit="suffix: MPa", th=thresholds((None, "red"), (0.1, "green"))),
        stat("Pumps running · 运行泵数", [pq(f'sum by (device) ({pt("value", "pump[0-9]+_run")})', "{{device}}", instant=True)], color_mode="value", decimals=0),
        stat("Flow · 瞬时流量", [pq(pt("cubic_meters_per_hour", "flow_rate"), "{{device}}", instant=True)], unit="suffix: m³/h", color_mode="value"),
        row("Pressures and levels · 压力与液位"),
        ts("Outlet pressures · 出水压力", [pq(pt("megapascals", "outlet_pressure_.*|inlet_pressure|hydrant_pressure"), "{{device}} {{point}}")], unit="suffix: MPa"),
        ts("Levels · 液位", [pq(pt("meters", "tank_level|fire_tank_level|sump_level"), "{{device}} {{point}}")], unit="lengthm"),
        row("Pumps · 水泵"),
        ts("Pump frequency · 水泵频率", [pq(pt("hertz", "pump[0-9]+_freq"), "{{device}} {{point}}")], unit="hertz", w=8),
        ts("Pump current · 水泵电流", [pq(pt("amperes", "pump[0-9]+_current"), "{{device}} {{point}}")], unit="amp", w=8),
        ts("Flow · 出水流量", [pq(pt("cubic_meters_per_hour", "flow_rate"), "{{device}}")], unit="suffix: m³/h", w=8),
        state("Pump run · 水泵运行", [pq(pt("value", "pump[0-9]+_run"), "{{device}} {{point}}")], RUN_MAP, w=8),
        state("Pump fault · 水泵故障", [pq(pt("value", "pump[0-9]+_fault"), "{{device}} {{point}}")], ALARM_MAP, w=8),
        state("Pump in service · 水泵投入", [pq(pt("value", "pump[0-9]+_enabled"), "{{device}} {{point}}")], bool_map("退出 out", "投入 in", on_colour="green", off_colour="orange"), w=8),
        ts("Water delivered per hour · 每小时出水量 (rolling)", [pq(f'increase({pt("cubic_meters", "water_total")}[1h])', "{{device}}")], unit="m3", w=12,
           description="Increase of the cumulative outlet meter over the preceding hour."),
        stat("Water delivered · 出水量 (range)", [pq(f'increase({pt("cubic_meters", "water_total")}[$__range])', "{{device}}", instant=True)], unit="m3", w=12, h=8, color_mode="value"),
        row("Water quality and room · 水质与环境"),
        ts("Residual chlorine · 余氯", [pq(pt("grams_per_cubic_meter", "chlorine"), "{{device}}")], unit="suffix: mg/L", w=6, th=thresholds((None, "red"), (0.05, "green"), (2.0, "red")), th_line=True),
        ts("Turbidity · 浊度", [pq(pt("ntu", "turbidity"), "{{device}}")], unit="suffix: NTU", w=6, th=thresholds((None, "green"), (1.0, "red")), th_line=True),
        ts("Room temperature and humidity · 泵房温湿度", [pq(pt("celsius", "temperature"), "{{device}} °C"), pq(pt("percent_relative_humidity", "humidity"), "{{device}} %RH")], w=12),
        state("Flood, smoke, door · 水浸/烟感/门磁", [pq(pt("value", "flood|flood_sensor|smoke|door_open"), "{{device}} {{point}}")], ALARM_MAP, w=12),
        up_panel(),
    ]
    return prom_vars('propwatch_point_megapascals{point="inlet_pressure"}'), panels, prom_annotations(device_filter=True)


def prom_distribution_room():
    panels = [
        row("Now · 当前"),
        stat("Phase voltage · 相电压", [pq(pt("volts", "ua|ub|uc"), "{{device}} {{point}}", instant=True)], w=6, unit="volt",
             th=thresholds((None, "red"), (171.6, "orange"), (187, "green"), (242, "red"))),
        stat("Load · 负荷", [pq(pt("kilowatts", "p_total"), "{{device}}", instant=True)], w=4, unit="kwatt", color_mode="value"),
        stat("Power factor · 功率因数", [pq(pt("value", "pf"), "{{device}}", instant=True)], w=4, decimals=2, th=thresholds((None, "orange"), (0.9, "green"))),
        stat("Winding temperature · 绕组温度", [pq(pt("celsius", "transformer_temp_.*"), "{{point}}", instant=True)], w=5, unit="celsius", th=thresholds((None, "green"), (130, "orange"), (150, "red"))),
        stat("ATS · 双电源", [pq(pt("value", "ats_mains|ats_generator"), "{{point}}", instant=True)], w=5, mappings=CLOSED_MAP),
        row("Incoming lines · 进线电表"),
        ts("Phase voltages · 相电压", [pq(pt("volts", "ua|ub|uc"), "{{device}} {{point}}")], unit="volt", w=8),
        ts("Line voltages · 线电压", [pq(pt("volts", "uab|ubc|uca"), "{{device}} {{point}}")], unit="volt", w=8),
        ts("Phase currents · 相电流", [pq(pt("amperes", "ia|ib|ic"), "{{device}} {{point}}")], unit="amp", w=8),
        ts("Active power · 有功功率", [pq(pt("kilowatts", "p_total"), "{{device}}")], unit="kwatt", stack=True, w=8),
        ts("Power factor · 功率因数", [pq(pt("value", "pf"), "{{device}}")], decimals=2, w=8, th=thresholds((None, "orange"), (0.9, "transparent")), th_line=True),
        ts("Frequency · 频率", [pq(pt("hertz", "freq"), "{{device}}")], unit="hertz", w=8),
        ts("Energy per hour · 每小时用电 (rolling)", [pq(f'increase({pt("kilowatthours", "energy_import")}[1h])', "{{device}}")], unit="kwatth", stack=True, w=16,
           description="Energy imported over the preceding hour."),
        stat("Energy · 用电量 (range)", [pq(f'increase({pt("kilowatthours", "energy_import")}[$__range])', "{{device}}", instant=True)], unit="kwatth", w=8, h=8, color_mode="value"),
        row("Switchgear · 开关柜与变压器"),
        ts("Transformer winding temperature · 变压器绕组温度", [pq(pt("celsius", "transformer_temp_.*"), "{{device}} {{point}}")], unit="celsius",
           th=thresholds((None, "transparent"), (130, "orange"), (150, "red")), th_line=True),
        ts("DC panel voltage · 直流屏电压", [pq(pt("volts", "dc_voltage"), "{{device}}")], unit="volt", th=thresholds((None, "red"), (198, "transparent")), th_line=True),
        state("Breakers · 断路器", [pq(pt("value", "incoming1_closed|incoming2_closed|bus_tie_closed"), "{{device}} {{point}}")], CLOSED_MAP),
        state("ATS and generator · 双电源与发电机", [pq(pt("value", "ats_mains|ats_generator|generator_running"), "{{device}} {{point}}")], CLOSED_MAP),
        state("Trips and faults · 跳闸与故障", [pq(pt("value", "incoming1_trip|incoming2_trip|generator_fault|dc_fault"), "{{device}} {{point}}")], ALARM_MAP),
        state("Flood, smoke, door · 水浸/烟感/门磁", [pq(pt("value", "flood|smoke|door_open"), "{{device}} {{point}}")], ALARM_MAP),
        ts("Room temperature and humidity · 配电室温湿度", [pq(pt("celsius", "room_temperature"), "{{device}} °C"), pq(pt("percent_relative_humidity", "room_humidity"), "{{device}} %RH")]),
        up_panel(),
    ]
    return prom_vars('propwatch_point_volts{point=~"ua|dc_voltage"}'), panels, prom_annotations(device_filter=True)


def prom_elevators():
    panels = [
        row("Now · 当前"),
        stat("Lifts moving · 运行中", [pq(f'sum({pt("meters_per_second", "speed")} > bool 0.05)', instant=True)], w=4, color_mode="value", decimals=0),
        stat("Floor · 楼层", [pq(pt("floor", "floor"), "{{device}}", instant=True)], w=20, decimals=0, color_mode="value"),
        table("Lift status · 电梯状态", [pq(pt("value", "direction|door_state|service_mode|fault_code|occupied|alarm_button|power_loss"), instant=True, table=True)], h=8,
              overrides=[by_name("direction", mappings=DIRECTION_MAP), by_name("door_state", mappings=DOOR_MAP), by_name("service_mode", mappings=MODE_MAP),
                         by_name("fault_code", mappings=FAULT_MAP), by_name("occupied", mappings=bool_map("无人 empty", "有人 occupied", on_colour="blue", off_colour="text")),
                         by_name("alarm_button", mappings=ALARM_MAP), by_name("power_loss", mappings=ALARM_MAP)],
              transformations=[{"id": "groupingToMatrix", "options": {"columnField": "point", "rowField": "device", "valueField": "Value", "emptyValue": "null"}}],
              description="One row per lift, one column per status point (Modbus and MQTT terminals share the codes)."),
        row("Travel · 运行"),
        ts("Floor · 楼层", [pq(pt("floor", "floor"), "{{device}}")], step=True, decimals=0),
        ts("Speed · 运行速度", [pq(pt("meters_per_second", "speed"), "{{device}}")], unit="velocityms"),
        state("Direction · 运行方向", [pq(pt("value", "direction"), "{{device}}")], DIRECTION_MAP),
        state("Doors · 门状态", [pq(pt("value", "door_state"), "{{device}}")], DOOR_MAP),
        ts("Door cycles per hour · 每小时开关门次数 (rolling)", [pq(f'changes({pt("value", "door_state")}[1h]) / 2', "{{device}}")], decimals=0,
           description="Door state changes over the preceding hour, halved (open + close): a usage and wear indicator."),
        up_panel(),
        row("Safety · 安全"),
        state("Fault code · 故障代码", [pq(pt("value", "fault_code"), "{{device}}")], FAULT_MAP),
        state("Service mode · 服务模式", [pq(pt("value", "service_mode"), "{{device}}")], MODE_MAP),
        state("Alarm button, power loss · 一键报警/停电", [pq(pt("value", "alarm_button|power_loss"), "{{device}} {{point}}")], ALARM_MAP),
        state("Occupied, level · 轿厢有人/平层", [pq(pt("value", "occupied|door_zone"), "{{device}} {{point}}")], bool_map("否 no", "是 yes", on_colour="blue", off_colour="text")),
    ]
    return prom_vars('propwatch_point_floor{point="floor"}'), panels, prom_annotations(device_filter=True)


def prom_fire_panel():
    panels = [
        row("Now · 当前"),
        stat("Fire · 火警", [pq(pt("value", "fire|started|feedback"), "{{point}}", instant=True)], w=8, mappings=bool_map("否 no", "是 YES")),
        stat("Faults · 故障", [pq(pt("value", "fault|bus_fault|disabled"), "{{point}}", instant=True)], w=8, mappings=bool_map("正常 ok", "故障 FAULT", on_colour="orange")),
        stat("Power supply · 电源", [pq(pt("value", "mains_fault|battery_fault"), "{{point}}", instant=True)], w=8, mappings=bool_map("正常 ok", "故障 FAULT", on_colour="orange")),
        table("Active alarms of the panel · 控制器当前报警", [pq('propwatch_alarm_active{site=~"$site", device=~"$device"} == 1', instant=True, table=True)], h=6,
              transformations=[organize(exclude=["Time", "Value", "__name__", "instance", "job"], order=["severity", "plan", "device", "rule", "site"])]),
        row("History · 历史"),
        state("Panel status · 控制器状态", [pq(pt("value", "normal|fire|started|feedback|supervisory|delay|manual|reset"), "{{device}} {{point}}")],
              bool_map("否 no", "是 yes", on_colour="red", off_colour="text"), w=24, h=9),
        state("Zones: fire · 分区火警", [pq(pt("value", "zone[0-9]+_fire"), "{{device}} {{point}}")], ALARM_MAP),
        state("Zones: fault · 分区故障", [pq(pt("value", "zone[0-9]+_fault"), "{{device}} {{point}}")], bool_map("正常 ok", "故障 fault", on_colour="orange")),
        state("Power and bus · 主电/备电/总线", [pq(pt("value", "mains_fault|battery_fault|bus_fault|fault|disabled"), "{{device}} {{point}}")], bool_map("正常 ok", "故障 fault", on_colour="orange")),
        up_panel(),
    ]
    return prom_vars('propwatch_point_value{point="fire"}'), panels, prom_annotations(device_filter=True)


def prom_alarms():
    a = 'site=~"$site", plan=~"$plan", severity=~"$severity"'
    r = 'plan=~"$plan", severity=~"$severity"'
    panels = [
        row("Now · 当前"),
        stat("Active alarms · 当前报警", [pq(f"sum(propwatch_alarm_active{{{a}}})", instant=True)], w=4, th=thresholds((None, "green"), (1, "red"))),
        stat("Open incidents · 未关闭事件", [pq('sum(propwatch_incidents_open{plan=~"$plan"})', instant=True)], w=4, th=thresholds((None, "green"), (1, "red"))),
        stat("Escalating · 升级中", [pq("propwatch_escalations_active", instant=True)], w=4, th=thresholds((None, "green"), (1, "orange"))),
        stat("Alarms raised · 报警次数 (range)", [pq(f"sum(increase(propwatch_alarms_raised_total{{{r}}}[$__range]))", instant=True)], w=4, decimals=0, th=thresholds((None, "green"), (1, "orange"), (144, "red"))),
        stat("Busiest 10 minutes · 10分钟最多报警", [pq(f"max_over_time(sum(increase(propwatch_alarms_raised_total{{{r}}}[10m]))[$__range:1m])", instant=True)], w=4, decimals=0,
             th=thresholds((None, "green"), (2, "orange"), (10, "red")), description="EEMUA 191: more than 10 alarms in 10 minutes is an alarm flood."),
        stat("Time in flood, 24 h · 报警泛滥时间占比", [pq(f"avg_over_time((sum(increase(propwatch_alarms_raised_total{{{r}}}[10m])) > bool 10)[24h:1m])", instant=True)], w=4, unit="percentunit",
             th=thresholds((None, "green"), (0.01, "orange"), (0.05, "red")), description="Share of the last 24 h in which more than 10 alarms were raised within 10 minutes."),
        table("Active alarms · 当前报警", [pq(f"propwatch_alarm_active{{{a}}} == 1", instant=True, table=True)], h=8, sort=("severity", False),
              transformations=[organize(exclude=["Time", "Value", "__name__", "instance", "job"], order=["severity", "plan", "device", "rule", "site"])]),
        row("Load · 报警负荷"),
        ts("Alarms per 10 minutes · 每10分钟报警数", [pq(f"sum(increase(propwatch_alarms_raised_total{{{r}}}[10m]))", "alarms / 10 min")], w=12,
           th=thresholds((None, "transparent"), (10, "red")), th_line=True, description="EEMUA 191 / ISA-18.2 alarm rate over the preceding 10 minutes."),
        ts("Alarms per hour by plan · 每小时报警 (按预案, rolling)", [pq(f"sum by (plan) (increase(propwatch_alarms_raised_total{{{r}}}[1h]))", "{{plan}}")], stack=True, w=12),
        bargauge("Alarms, 24 h, by plan · 24小时报警 (按预案)", [pq(f"sort_desc(sum by (plan) (increase(propwatch_alarms_raised_total{{{r}}}[24h])))", "{{plan}}", instant=True)], decimals=0),
        bargauge("Alarms, 24 h, by severity · 24小时报警 (按等级)", [pq(f"sum by (severity) (increase(propwatch_alarms_raised_total{{{r}}}[24h]))", "{{severity}}", instant=True)], decimals=0),
        table("Chattering alarms · 频繁动作的报警", [pq(f"topk(10, sum by (device, rule, plan) (changes(propwatch_alarm_active{{{a}}}[$__range])))", instant=True, table=True)], w=8, sort=("Value", True),
              transformations=[organize(exclude=["Time"], rename={"Value": "state changes"})], description="Top 10 alarms by state changes in the time range."),
        ts("Incidents open by plan · 未关闭事件 (按预案)", [pq('propwatch_incidents_open{plan=~"$plan"} > 0', "{{plan}}")], stack=True, step=True, decimals=0),
        state("Alarm activity · 报警状态", [pq(f"propwatch_alarm_active{{{a}}}", "{{device}} · {{rule}}")], ALARM_MAP),
        row("Notifications · 通知"),
        ts("Notifications · 通知 (per minute)", [pq("sum by (channel, result) (increase(propwatch_notifications_total[$__rate_interval]))", "{{channel}} {{result}}")], bars=True, stack=True, w=8),
        bargauge("Notifications by result · 通知结果 (range)", [pq("sum by (channel, result) (increase(propwatch_notifications_total[$__range]))", "{{channel}} {{result}}", instant=True)], decimals=0),
        ts("Outbox and escalations · 待发通知与升级", [pq("propwatch_outbox_pending", "pending {{channel}}"), pq("propwatch_escalations_active", "escalating incidents")], w=8, decimals=0),
        row("Alarm engine · 报警引擎"),
        ts("Rule evaluations · 规则计算", [pq("rate(propwatch_rule_evaluations_total[$__rate_interval])", "evaluations/s")], unit="short", w=12),
        ts("State store · 状态库", [pq("propwatch_alarm_store_pending_writes", "pending writes"), pq("increase(propwatch_alarm_store_errors_total[$__rate_interval])", "write errors")], w=12, decimals=0,
           description="Writes to the SQLite state store waiting after a failure, and failed writes."),
    ]
    vs = [
        qvar("site", "Site · 小区", PROM, "label_values(propwatch_device_up, site)", multi=False),
        qvar("plan", "Plan · 预案", PROM, "label_values(propwatch_incidents_open, plan)"),
        custom_var("severity", "Severity · 等级", ["P1", "P2", "P3"]),
        qvar("device", "Device · 设备", PROM, 'label_values(propwatch_device_up{site=~"$site"}, device)'),
    ]
    # the device filter applies to the alarm tables only (counters carry plan and severity)
    for p in panels:
        for t in p.get("targets", []):
            t["expr"] = t["expr"].replace(f"propwatch_alarm_active{{{a}}}", f'propwatch_alarm_active{{{a}, device=~"$device"}}')
    return vs, panels, prom_annotations(device_filter=True)


# --------------------------------------------------------------------------- fleet


def influx_fleet():
    """Every estate writing to one InfluxDB (each with its own `site` tag): the upkeep
    figures the engineering department is judged by, per estate."""
    t = "$timeFilter"
    ev = lambda kind: f"\"kind\" = '{kind}' AND {t}"
    panels = [
        row("Estates · 各小区"),
        table("Estates reporting · 上报数据的小区", [iq(f'SELECT count("text") AS "events" FROM "alarm_events" WHERE {t} GROUP BY "site"', table=True)], w=8, h=8,
              description="Estates whose daemons wrote timeline events in the time range (one row each)."),
        bargauge("Incidents opened per estate · 各小区事件数", [iq(f'SELECT count("text") FROM "alarm_events" WHERE {ev("incident_opened")} GROUP BY "site"', alias="$tag_site")], w=8, decimals=0),
        bargauge("P1 incidents per estate · 各小区 P1 事件", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE \"severity\" = 'P1' AND {ev('incident_opened')} GROUP BY \"site\"", alias="$tag_site")], w=8, decimals=0,
                 th=thresholds((None, "green"), (1, "red"))),
        row("Response · 响应"),
        bargauge("Mean time to acknowledge · 平均确认用时", [iq(f'SELECT mean("seconds") FROM "alarm_events" WHERE {ev("incident_acked")} GROUP BY "site"', alias="$tag_site")], w=6, unit="s",
                 th=thresholds((None, "green"), (300, "orange"), (600, "red")), description="Seconds from an incident's opening to its acknowledgement, averaged per estate over the time range."),
        bargauge("Longest time to acknowledge · 最长确认用时", [iq(f'SELECT max("seconds") FROM "alarm_events" WHERE {ev("incident_acked")} GROUP BY "site"', alias="$tag_site")], w=6, unit="s",
                 th=thresholds((None, "green"), (300, "orange"), (600, "red"))),
        bargauge("Mean time to arrive · 平均到场用时", [iq(f'SELECT mean("seconds") FROM "alarm_events" WHERE {ev("incident_arrived")} GROUP BY "site"', alias="$tag_site")], w=6, unit="s",
                 th=thresholds((None, "green"), (900, "orange"), (1800, "red")), description="Seconds from an incident's opening to the arrival on site, averaged per estate."),
        bargauge("Time limits overdue · 超时次数", [iq(f'SELECT count("text") FROM "alarm_events" WHERE {ev("limit_overdue")} GROUP BY "site"', alias="$tag_site")], w=6, decimals=0,
                 th=thresholds((None, "green"), (1, "red")), description="Plan time limits (acknowledge, arrive, resolve) missed, per estate."),
        row("Timeline · 时间线"),
        ts("Incidents per day by estate · 每日事件 (按小区)", [iq(f"SELECT count(\"text\") FROM \"alarm_events\" WHERE {ev('incident_opened')} GROUP BY time(1d), \"site\" fill(0) tz('Asia/Shanghai')", alias="$tag_site")], bars=True, stack=True, w=24),
    ]
    return [], panels, []


def prom_fleet():
    """Every estate's metrics in one Prometheus or VictoriaMetrics (remote_write or
    federation: the `site` and `region` labels keep them apart)."""
    resp = lambda stage, q: f'histogram_quantile({q}, sum by (site, le) (increase(propwatch_incident_response_seconds_bucket{{stage="{stage}"}}[$__range])))'
    mean = lambda stage: (f'sum by (site) (increase(propwatch_incident_response_seconds_sum{{stage="{stage}"}}[$__range])) / '
                          f'sum by (site) (increase(propwatch_incident_response_seconds_count{{stage="{stage}"}}[$__range]))')
    panels = [
        row("Now · 当前"),
        stat("Estates reporting · 在线小区", [pq("count(count by (site) (propwatch_build_info))", instant=True)], w=4, decimals=0, th=GREEN),
        stat("Unacknowledged P1 · 未确认 P1", [pq('sum(propwatch_incidents_unacknowledged{severity="P1"})', instant=True)], w=4, decimals=0,
             th=thresholds((None, "green"), (1, "red"))),
        stat("Open incidents · 未关闭事件", [pq("sum(propwatch_incidents_open)", instant=True)], w=4, decimals=0, th=thresholds((None, "green"), (1, "orange"))),
        bargauge("Devices online per estate · 各小区设备在线率", [pq("sum by (site) (propwatch_device_up) / count by (site) (propwatch_device_up)", "{{site}}", instant=True)], w=12, h=8,
                 unit="percentunit", minv=0, maxv=1, th=thresholds((None, "red"), (0.9, "orange"), (0.99, "green"))),
        bargauge("Open incidents per estate · 各小区未关闭事件", [pq("sum by (site) (propwatch_incidents_open)", "{{site}}", instant=True)], w=12, decimals=0,
                 th=thresholds((None, "green"), (1, "orange"))),
        bargauge("Unacknowledged per estate · 各小区未确认事件", [pq("sum by (site, severity) (propwatch_incidents_unacknowledged)", "{{site}} {{severity}}", instant=True)], w=12, decimals=0,
                 th=thresholds((None, "green"), (1, "red"))),
        row("Response · 响应"),
        bargauge("Mean time to acknowledge · 平均确认用时", [pq(mean("acknowledge"), "{{site}}", instant=True)], w=6, unit="s",
                 th=thresholds((None, "green"), (300, "orange"), (600, "red")), description="Seconds from an incident's opening to its acknowledgement, averaged per estate over the time range."),
        bargauge("90 % acknowledged within · 90% 确认用时", [pq(resp("acknowledge", 0.9), "{{site}}", instant=True)], w=6, unit="s",
                 th=thresholds((None, "green"), (300, "orange"), (600, "red")), description="The 90th percentile of the time to acknowledge (histogram buckets: 30 s .. 4 h)."),
        bargauge("Mean time to arrive · 平均到场用时", [pq(mean("arrive"), "{{site}}", instant=True)], w=6, unit="s",
                 th=thresholds((None, "green"), (900, "orange"), (1800, "red"))),
        bargauge("Alarms raised per estate · 各小区报警次数", [pq("sum by (site) (increase(propwatch_alarms_raised_total[$__range]))", "{{site}}", instant=True)], w=6, decimals=0),
        row("Trends · 趋势"),
        ts("Open incidents by estate · 未关闭事件 (按小区)", [pq("sum by (site) (propwatch_incidents_open)", "{{site}}")], stack=True, step=True, decimals=0),
        ts("Devices offline by estate · 离线设备 (按小区)", [pq("count by (site) (propwatch_device_up == 0) or sum by (site) (propwatch_device_up) * 0", "{{site}}")], stack=True, decimals=0),
    ]
    return [], panels, []


# --------------------------------------------------------------------------- assembly


def place(panels, ds):
    """Flow layout on Grafana's 24-column grid; numbers panels; sets datasources."""
    out, x, y, row_h, pid = [], 0, 0, 0, 1
    for p in panels:
        if p["type"] == "row":
            if x:
                y += row_h
            x, row_h = 0, 0
            p = dict(p, id=pid, gridPos={"h": 1, "w": 24, "x": 0, "y": y})
            y += 1
        else:
            w, h = p.pop("_w"), p.pop("_h")
            if x + w > 24:
                x, y, row_h = 0, y + row_h, 0
            targets = []
            for i, t in enumerate(p["targets"]):
                targets.append(dict({"refId": chr(ord("A") + i), "datasource": ds}, **t))
            p = dict({"id": pid, "type": p["type"], "title": p["title"], "gridPos": {"h": h, "w": w, "x": x, "y": y}, "datasource": ds}, **{k: v for k, v in p.items() if k not in ("type", "title")})
            p["targets"] = targets
            x += w
            row_h = max(row_h, h)
        out.append(p)
        pid += 1
    return out


def dashboard(subject, flavour, spec):
    variables, panels, annotations = spec
    ds = INFLUX if flavour == "influxql" else PROM
    tag = "InfluxQL" if flavour == "influxql" else "Prometheus"
    return {
        "uid": f"propwatch-{subject}-{'iql' if flavour == 'influxql' else 'prom'}",
        "title": f"propwatch · {TITLES[subject]} ({tag})",
        "description": f"propwatch {subject.replace('-', ' ')} dashboard over {'the InfluxDB history (InfluxQL)' if flavour == 'influxql' else 'propwatch /metrics in Prometheus'}. Generated by dashboards/generate.py: edit the generator, not this file.",
        "tags": ["propwatch", flavour],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {"title": "propwatch", "type": "dashboards", "tags": ["propwatch", flavour], "asDropdown": True, "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}
        ],
        "annotations": {"list": annotations},
        "templating": {"list": variables},
        "panels": place(panels, ds),
    }


SPECS = {
    "influxql": {
        "overview": influx_overview,
        "pump-room": influx_pump_room,
        "distribution-room": influx_distribution_room,
        "elevators": influx_elevators,
        "fire-panel": influx_fire_panel,
        "alarms": influx_alarms,
        "fleet": influx_fleet,
    },
    "prometheus": {
        "overview": prom_overview,
        "pump-room": prom_pump_room,
        "distribution-room": prom_distribution_room,
        "elevators": prom_elevators,
        "fire-panel": prom_fire_panel,
        "alarms": prom_alarms,
        "fleet": prom_fleet,
    },
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)), help="directory to write influxql/ and prometheus/ into")
    args = ap.parse_args()
    for flavour, specs in SPECS.items():
        d = os.path.join(args.out, flavour)
        os.makedirs(d, exist_ok=True)
        for subject in SUBJECTS:
            dash = dashboard(subject, flavour, specs[subject]())
            with open(os.path.join(d, f"{subject}.json"), "w", encoding="utf-8", newline="\n") as f:
                json.dump(dash, f, ensure_ascii=False, indent=2)
                f.write("\n")


if __name__ == "__main__":
    main()
