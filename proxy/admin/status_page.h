/* The status page of GET / (DESIGN.md "Admin endpoints"): one HTML
 * document, no external resources. status.c puts a server-rendered
 * snapshot between HEAD and TAIL, so it reads without JavaScript; the
 * script then re-renders the same markup from /status every 500 ms and
 * ticks drain countdowns every 100 ms between fetches. */
#ifndef USHER_PROXY_STATUS_PAGE_H
#define USHER_PROXY_STATUS_PAGE_H

#define STATUS_PAGE_HEAD                                                                           \
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"                         \
    "<meta name=\"viewport\" content=\"width=device-width\">\n<title>usher status</title>\n"     \
    "<style>\n"                                                                                    \
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\n"       \
    "h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.2em 0 .4em}\n"               \
    "h3{font-size:1em;margin:1em 0 .3em}\n"                                                        \
    "table{border-collapse:collapse;background:#fff;min-width:40em}\n"                            \
    "td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#eee}\n"        \
    ".state{font-weight:bold}.state-healthy .state{color:#1a7f37}\n"                              \
    ".state-draining .state{color:#b35900}.state-draining{background:#fff4e5}\n"                  \
    ".state-unhealthy .state{color:#c62828}.state-checking .state{color:#666}\n"                  \
    ".override{background:#6a1b9a;color:#fff;border-radius:3px;padding:0 .35em;font-size:.85em}\n" \
    ".slot.zero{color:#999}.countdown{font-variant-numeric:tabular-nums;font-weight:bold}\n"      \
    "#live{color:#666;font-size:.85em}\n"                                                          \
    "</style></head>\n<body>\n<h1>usher</h1>\n<p id=\"live\">snapshot rendered by the server"   \
    "</p>\n<div id=\"snapshot\">\n"

#define STATUS_PAGE_TAIL                                                                           \
    "</div>\n<script>\n"                                                                           \
    "(function(){\n"                                                                               \
    "function esc(s){return String(s).replace(/[&<>\"']/g,function(c){return{'&':'&amp;',"       \
    "'<':'&lt;','>':'&gt;','\"':'&quot;',\"'\":'&#39;'}[c];});}\n"                                \
    "function render(st){\n"                                                                       \
    " var h='<p class=\"proc\">state <b id=\"proc-state\">'+esc(st.state)+'</b> · generation '+"   \
    "st.generation+' · pid '+st.pid+' · connections '+st.connections+'</p>\\n';\n"                \
    " h+='<h2>Listeners</h2>\\n<table id=\"listeners\"><tr><th>listener</th><th>bind</th>"       \
    "<th>split</th><th>connections</th></tr>\\n';\n"                                              \
    " st.listeners.forEach(function(l){\n"                                                         \
    "  h+='<tr class=\"listener\" data-listener=\"'+esc(l.name)+'\"><td>'+esc(l.name)+'</td><td>'+" \
    "esc(l.bind)+'</td><td class=\"split\">';\n"                                                  \
    "  var first=true;for(var k in l.pools){h+=(first?'':' ')+'<span class=\"slot'+(l.pools[k]?"  \
    "'':' zero')+'\">'+esc(k)+' '+l.pools[k]+'</span>';first=false;}\n"                           \
    "  if(l.split_override)h+=' <span class=\"override\">override</span>';\n"                      \
    "  h+='</td><td>'+l.connections+'</td></tr>\\n';});\n"                                         \
    " h+='</table>\\n<h2>Pools</h2>\\n';\n"                                                        \
    " st.pools.forEach(function(p){\n"                                                             \
    "  h+='<h3 class=\"pool\">'+esc(p.name)+'</h3>\\n<table class=\"backends\"><tr><th>backend"   \
    "</th><th>address</th><th>state</th><th>weight</th><th>connections</th><th>in flight</th>"    \
    "<th>drain</th></tr>\\n';\n"                                                                   \
    "  p.backends.forEach(function(b){\n"                                                          \
    "   h+='<tr class=\"backend state-'+esc(b.state)+'\" data-pool=\"'+esc(p.name)+'\" "          \
    "data-backend=\"'+esc(b.name)+'\"><td>'+esc(b.name)+'</td><td>'+esc(b.address)+'</td>"      \
    "<td class=\"state\">'+esc(b.state)+'</td><td class=\"weight\">'+b.weight+"                   \
    "(b.weight_override!==null?' (override)':'')+'</td><td class=\"conns\">'+"                   \
    "b.active_connections+'</td><td class=\"inflight\">'+b.inflight_requests+'</td>"             \
    "<td class=\"drain\">';\n"                                                                     \
    "   if(b.drain){h+=esc(b.drain.reason)+': <span class=\"countdown\" data-remaining-ms=\"'+"   \
    "b.drain.remaining_ms+'\">'+(b.drain.remaining_ms/1000).toFixed(1)+' s</span> left, '+"      \
    "b.drain.connections+' connections';}\n"                                                       \
    "   h+='</td></tr>\\n';});\n"                                                                  \
    "  h+='</table>\\n';});\n"                                                                     \
    " return h;}\n"                                                                                \
    "var fetched=Date.now();\n"                                                                    \
    "function tick(){var el=document.querySelectorAll('.countdown');var d=Date.now()-fetched;\n"  \
    " for(var i=0;i<el.length;i++){var r=Math.max(0,+el[i].getAttribute('data-remaining-ms')-d);\n" \
    "  if(+el[i].getAttribute('data-remaining-ms')>0)el[i].textContent=(r/1000).toFixed(1)+' s';}}\n" \
    "function poll(){fetch('/status',{cache:'no-store'}).then(function(r){return r.json();})"     \
    ".then(function(st){document.getElementById('snapshot').innerHTML=render(st);"               \
    "fetched=Date.now();document.getElementById('live').textContent='live: updated '+"           \
    "new Date().toISOString();}).catch(function(e){document.getElementById('live').textContent="  \
    "'live: /status unreachable ('+e+')';});}\n"                                                   \
    "poll();setInterval(poll,500);setInterval(tick,100);\n"                                        \
    "})();\n</script>\n</body></html>\n"

#endif
