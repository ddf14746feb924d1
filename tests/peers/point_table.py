#!/usr/bin/env python3
"""Write a vendor-style point table (点表) as .xlsx with openpyxl, a spreadsheet library nobody
here wrote: a merged title row above the header, Chinese headers with remarks in brackets,
numbers stored as numbers (and one address as text), Modicon addresses in one sheet and
plain addresses with a function column in another. Rows 7 and 9 of the first sheet are bad
on purpose (an address that is no number, a type nobody reads). Usage: point_table.py OUT.xlsx"""
import csv
import sys

from openpyxl import Workbook

if sys.argv[1].endswith(".csv"):
    # a CSV as Excel writes it on a Chinese Windows: GB18030, CRLF; a header the defaults do
    # not know ("Reg", mapped with --column address=Reg); rows 4 to 7 are bad: no name, a
    # scale that is no number, an id used twice, a value overlapping the one before
    with open(sys.argv[1], "w", encoding="gb18030", newline="") as f:
        w = csv.writer(f)
        w.writerow(["标识", "名称", "功能码", "Reg", "类型", "系数", "单位"])
        w.writerow(["ua", "A相电压", "04", "0", "FLOAT", "", "V"])
        w.writerow(["ub", "B相电压", "04", "2", "FLOAT", "", "V"])
        w.writerow(["uc", "", "04", "4", "FLOAT", "", "V"])
        w.writerow(["ia", "A相电流", "04", "6", "UINT16", "千分之一", "A"])
        w.writerow(["ua", "A相电压2", "04", "8", "UINT16", "", "V"])
        w.writerow(["pf", "功率因数", "04", "1", "INT16", "0.001", ""])
        w.writerow(["f", "频率", "保持寄存器", "0x20", "UINT16", "0.01", "Hz"])
    sys.exit(0)

wb = Workbook()
ws = wb.active
ws.title = "点表"
ws.append(["XX 水泵控制柜 Modbus 通讯点表 V2.3"])
ws.merge_cells("A1:H1")
ws.append(["序号", "参数名称", "寄存器地址(十进制)", "数据类型", "字节序", "系数", "单位", "备注"])
rows = [
    (1, "1#泵运行", 10001, "BIT", None, None, None, "1=运行"),
    (2, "出水压力", 30001, "FLOAT", "CDAB", None, "MPa", None),
    (3, "进水压力", 30003, "FLOAT", "CDAB", None, "MPa", None),
    (4, "1#泵频率", 40001, "UINT16", None, 0.01, "Hz", None),
    (5, "累计运行时间", "40O11", "UINT32", None, None, "h", "bad address: the letter O"),
    (6, "水箱液位", 30005, "有符号16位", None, "1/100", "m", None),
    (7, "故障字", 40002, "BCD", None, None, None, "bad type"),
    (8, "累计流量", 30007, "DOUBLE", "ABCD", None, "m³", None),
    (9, "2#泵运行", "1x0002", "BIT", None, None, None, "Modicon 1x notation"),
]
for r in rows:
    ws.append(list(r))
ws2 = wb.create_sheet("配电")
ws2.append(["Name", "Function", "Address", "Type", "Order", "Scale", "Unit", "Bit"])
ws2.append(["A相电压", 4, "0x0000", "float", "ABCD", None, "V", None])
ws2.append(["开关合闸", 3, 16, "bool", None, None, None, 3])
wb.save(sys.argv[1])
