/* butte web UI: the task page's kill button. It asks the master to kill the task
 * (POST /master/kill-task, which sends KILL_CONTAINER to the agent running it: a browser
 * cannot reach agents itself), after a confirmation; the task page then shows the task's
 * last updates as the master receives them. */
"use strict";

(function (B) {
  const { h } = B;
  const LIVE = new Set(["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"]);

  /** A "Kill task" button for a task of /master/tasks (null once the task has ended). */
  function killButton(task) {
    if (!LIVE.has(task.state)) return null;
    const note = h("span", { class: "muted small", id: "task-kill-note" });
    const button = h(
      "button",
      { class: "btn", id: "task-kill", type: "button", title: "KILL_CONTAINER on the task's agent" },
      "Kill task",
    );
    button.onclick = async () => {
      if (!window.confirm(`Kill task ${task.id}? Its container gets SIGKILL.`)) return;
      button.disabled = true;
      note.textContent = " killing…";
      try {
        const response = await fetch("/master/kill-task", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ task_id: task.id, framework_id: task.framework_id }),
        });
        const text = (await response.text()).trim();
        note.textContent = response.ok ? " kill sent" : ` ${text || response.statusText}`;
        note.className = response.ok ? "muted small" : "error small";
      } catch (err) {
        note.textContent = ` master unreachable: ${err.message || err}`;
        note.className = "error small";
      } finally {
        button.disabled = false;
      }
    };
    return h("span", {}, button, note);
  }

  Object.assign(B.ui, { killButton }); // B.ui comes from pages.js, loaded before
})(window.Butte);
