#!/usr/bin/env python3
"""perfsplit: where the proxy's CPU goes, from a perf recording with call
graphs (perf record -g). Each sample is put in the first category whose
test its stack passes (see RULES), so the shares add up to 100%.

    perfsplit.py perf.data                 # the table
    perfsplit.py perf.data 'CATEGORY'      # also the top leaf functions of one category
"""
import sys, subprocess, collections
data = sys.argv[1]
out = subprocess.run(['perf','script','-i',data],capture_output=True,text=True).stdout
samples = out.split('\n\n')
cats = collections.Counter(); total=0
def frames(s):
    fs=[]
    for line in s.split('\n')[1:]:
        parts=line.split()
        if len(parts)>=2: fs.append(parts[1].split('+0x')[0])
    return fs
RULES = [
 # (category, predicate on frames list leaf->root)
 ('runtime: stack growth', lambda f: any(x.startswith('runtime.newstack') or x=='runtime.morestack.abi0' for x in f)),
 ('runtime: GC', lambda f: any(x.startswith('runtime.gcBgMarkWorker') or x.startswith('runtime.gcAssist') or x.startswith('runtime.bgsweep') or x.startswith('runtime.bgscavenge') or x=='runtime.gcDrain' for x in f)),
 ('runtime: sysmon', lambda f: any(x=='runtime.sysmon' for x in f)),
 ('syscalls: epoll_wait (runtime poller)', lambda f: any(x=='runtime.netpoll' for x in f)),
 ('runtime: scheduler (park, wake, find work)', lambda f: any(x in ('runtime.schedule','runtime.findRunnable','runtime.park_m','runtime.mcall','runtime.goready','runtime.ready','runtime.wakep','runtime.startm','runtime.stopm','runtime.newproc','runtime.goexit0','runtime.gopark','runtime.futexwakeup','runtime.futexsleep','runtime.notewakeup') for x in f) and not any('syscall.' in x and 'Syscall' in x for x in f[:6])),
 ('syscalls: read (request, response head)', lambda f: any(x in ('syscall.read','syscall.Read','syscall.recvfrom') for x in f) or any('fill' in x for x in f[:12]) and any(x.startswith('[k]') for x in f)),
 ('syscalls: write/writev (request upstream, response to client)', lambda f: any(x in ('syscall.write','syscall.Write','syscall.writev','internal/poll.(*FD).Writev','internal/poll.(*FD).Write') for x in f)),
 ('syscalls: other', lambda f: any('entry_SYSCALL' in x or 'do_syscall_64' in x for x in f)),
 ('crypto (TLS handshakes and records)', lambda f: any(x.startswith('crypto/') or x.startswith('vendor/golang.org/x/crypto') or x.startswith('golang.org/x/crypto') for x in f)),
 ('runtime: malloc', lambda f: any(x.startswith('runtime.mallocgc') or x=='runtime.newobject' or x=='runtime.makeslice' or x=='runtime.growslice' for x in f[:8])),
 ('sluice: request parse (h1server, textproto)', lambda f: any('h1server.(*conn).readRequest' in x for x in f)),
 ('sluice: upstream exchange (h1client)', lambda f: any('h1client.' in x for x in f)),
 ('sluice: response to client (h1server)', lambda f: any('h1server.(*response)' in x or 'h1server.(*conn).flushOut' in x for x in f)),
 ('sluice: proxy pipeline (routing, checks, headers)', lambda f: any(x.startswith('github.com/sluiceproxy/sluice.') for x in f)),
 ('sluice: h1server other', lambda f: any('h1server' in x for x in f)),
 ('other', lambda f: True),
]
for s in samples:
    f=frames(s)
    if not f: continue
    total+=1
    for name,pred in RULES:
        if pred(f):
            cats[name]+=1; break
for name,_ in RULES:
    print(f"{100*cats[name]/total:5.1f}%  {name}")
print(total,'samples')
if len(sys.argv)>2:
    want=sys.argv[2]; leafs=collections.Counter()
    for s in samples:
        f=frames(s)
        if not f: continue
        for name,pred in RULES:
            if pred(f):
                if name==want: leafs[f[0]]+=1
                break
    for k,v in leafs.most_common(25): print(v,k)
