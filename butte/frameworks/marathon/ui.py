"""The services page served by ``butte marathon`` at ``/ui``: apps with their instances and
health, pods with their instances and each container's state, deployments in progress, the
launch queue with why an app waits, and each app's and pod container's task linking to its
sandbox in the master's web UI (``#/tasks/<id>``). One static page that polls the REST API
every two seconds."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>butte marathon: services</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}.ok{color:#080}.bad{color:#b00}
.muted{color:#777}code{font-size:12px}
</style></head><body>
<h1>Services <span class="muted" id="who"></span></h1>
<h2>Apps</h2><table id="apps"><thead><tr><th>app</th><th>instances</th><th>running</th>
<th>healthy</th><th>version</th><th>tasks</th></tr></thead><tbody></tbody></table>
<h2>Pods</h2><table id="pods"><thead><tr><th>pod</th><th>instances</th><th>status</th>
<th>version</th><th>instances and their containers</th></tr></thead><tbody></tbody></table>
<h2>Deployments in progress</h2><table id="deps"><thead><tr><th>id</th><th>apps and pods</th>
<th>step</th><th>current actions</th></tr></thead><tbody></tbody></table>
<h2>Launch queue</h2><table id="queue"><thead><tr><th>app</th><th>waiting</th>
<th>delay (s)</th><th>why offers were not used</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
let master = "";
function esc(s){return String(s).replace(/[&<>"']/g,c=>"&#"+c.charCodeAt(0)+";");}
function rows(id, html){document.querySelector("#"+id+" tbody").innerHTML =
  html.join("") || '<tr><td colspan="6" class="muted">none</td></tr>';}
function sandbox(id, state, extra){
  const cls = state === "TASK_RUNNING" ? "ok" : "muted";
  const href = master ? master + "/#/tasks/" + encodeURIComponent(id) : "#";
  return '<a href="'+esc(href)+'"><code>'+esc(id)+'</code></a> <span class="'+cls+'">'+
    esc(state)+esc(extra)+'</span>';
}
function taskLink(t){
  const health = (t.healthCheckResults||[]).map(r => r.alive ? " healthy" : " unhealthy").join("");
  return "<div>"+sandbox(t.id, t.state, health)+" "+esc(t.host)+":"+
    esc((t.ports||[]).join(","))+"</div>";
}
function memberLink(c){
  const health = (c.conditions||[]).filter(x => x.name === "healthy")
    .map(x => x.value === "true" ? " healthy" : " unhealthy").join("");
  return '<div class="member">'+esc(c.name)+": "+sandbox(c.containerId, c.status, health)+"</div>";
}
async function refresh(){
  try{
    if(!master){const info = await (await fetch("/v2/info")).json();
      const m = (info.marathon_config||{}).master || "";
      master = m && !m.startsWith("zk://") ? "http://" + m.split(",")[0] : "";
      document.getElementById("who").textContent = info.name+" "+info.version+" at "+info.leader;}
    const apps = (await (await fetch("/v2/apps?embed=apps.tasks")).json()).apps;
    rows("apps", apps.map(a => {
      const hc = (a.healthChecks||[]).length;
      const healthy = hc ? '<span class="'+(a.tasksUnhealthy?"bad":"ok")+'">'+a.tasksHealthy+
        ' / '+a.tasksUnhealthy+' unhealthy</span>' : '<span class="muted">no checks</span>';
      return "<tr><td>"+esc(a.id)+"</td><td>"+a.instances+"</td><td>"+a.tasksRunning+
        "</td><td>"+healthy+"</td><td>"+esc(a.version)+"</td><td>"+
        (a.tasks||[]).map(taskLink).join("")+"</td></tr>";}));
    const pods = await (await fetch("/v2/pods/::status")).json();
    rows("pods", pods.map(p => '<tr data-pod="'+esc(p.id)+'"><td>'+esc(p.id)+"</td><td>"+
      p.spec.scaling.instances+'</td><td class="'+(p.status==="STABLE"?"ok":"muted")+'">'+
      esc(p.status)+"</td><td>"+esc(p.spec.version)+"</td><td>"+p.instances.map(i =>
        "<div><code>"+esc(i.id)+"</code> "+esc(i.status)+" on "+esc(i.agentHostname)+
        i.containers.map(memberLink).join("")+"</div>").join("")+"</td></tr>"));
    const deps = await (await fetch("/v2/deployments")).json();
    rows("deps", deps.map(d => "<tr><td><code>"+esc(d.id)+"</code></td><td>"+
      esc(d.affectedApps.concat(d.affectedPods||[]).join(", "))+"</td><td>"+d.currentStep+
      " / "+d.totalSteps+"</td><td>"+
      esc(d.currentActions.map(x => x.action+" "+(x.app||x.pod)).join(", "))+"</td></tr>"));
    const queue = (await (await fetch("/v2/queue")).json()).queue;
    rows("queue", queue.map(q => {
      const why = q.delay.overdue ? q.processedOffersSummary.rejectSummaryLastOffers
        .filter(r => r.declined).map(r => r.reason + " ("+r.declined+")").join(", ")
        : "backoff delay";
      return "<tr><td>"+esc(q.app.id)+"</td><td>"+q.count+"</td><td>"+
        q.delay.timeLeftSeconds+"</td><td>"+esc(why || "waiting for offers")+"</td></tr>";}));
  }catch(e){document.getElementById("who").textContent = "(unreachable: "+e+")";}
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
