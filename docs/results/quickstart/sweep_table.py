# Combines the search's sweep.json files into one table (docs/quickstart.md, "The search").
import json,sys
files=sys.argv[1:]
pts=[]
for f in files:
    pts+=json.load(open(f))['points']
names={'sft':'SFT','rl_zero':'RL-zero','cold_start':'Cold-start','alternating':'Alternating','bridge':'BRIDGE'}
lrs=sorted({p['hyper']['lr'] for p in pts})
import statistics as st
def cell(p):
    v=[x*100 for x in p['val_accuracy']]; return f"{st.mean(v):.1f} ± {st.stdev(v):.1f}"
def lrfmt(x): return f"{x:.0e}".replace('e-0','e-')
print('| method | '+' | '.join('lr '+lrfmt(l) for l in lrs)+' |')
print('|---|'+'---:|'*len(lrs))
for m in ['sft','rl_zero','cold_start','alternating','bridge']:
    lams=sorted({p['hyper'].get('lambda') for p in pts if p['method']==m}, key=lambda x: x or 0)
    for lam in lams:
        row=[]
        best=max((p for p in pts if p['method']==m), key=lambda p:p['mean'])
        for l in lrs:
            ps=[p for p in pts if p['method']==m and p['hyper']['lr']==l and p['hyper'].get('lambda')==lam]
            if not ps: row.append('—'); continue
            c=cell(ps[0]); row.append(c+(' ✓' if ps[0] is best else ''))
        label=names[m]+(f', λ {lam}' if lam is not None else '')
        print(f'| {label} | '+' | '.join(row)+' |')
