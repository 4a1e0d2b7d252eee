import Mustache

/// The status page's Mustache templates (swift-mustache) and its style sheet. `{{value}}`
/// escapes for HTML; the only unescaped value, `{{{style}}}`, is the constant below. No script:
/// the page refreshes itself with `<meta http-equiv="refresh">`.
enum StatusTemplates {
    /// The templates by name: `status`, `story` and `problem`, with the partials they share.
    static func library() throws -> MustacheLibrary {
        var library = MustacheLibrary()
        try library.register(head, named: "head")
        try library.register(status, named: "status")
        try library.register(story, named: "story")
        try library.register(problem, named: "problem")
        return library
    }

    static let head = """
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="referrer" content="no-referrer">
        <style>{{{style}}}</style>
        """

    static let status = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        {{> head}}
        <meta http-equiv="refresh" content="{{refreshSeconds}}">
        <title>snapbackd status</title>
        </head>
        <body>
        <header>
        <h1>snapbackd</h1>
        <p class="system">
        <span class="health health-{{health}}" id="health">controller {{health}}</span>{{#degraded}} <span class="reason">{{healthReason}}</span>{{/degraded}}
        · last seq <span id="last-seq">{{lastSequence}}</span> · version {{version}} · {{now}}
        </p>
        <p class="note">Read-only: this page has no actions. It reloads every {{refreshSeconds}} s.</p>
        </header>
        <main>
        <section id="volumes">
        <h2>Volumes</h2>
        {{^volumes}}<p class="empty">No volumes.</p>{{/volumes}}
        {{^empty(volumes)}}
        <table>
        <thead><tr><th>Name</th><th>Size</th><th>Status</th><th>Fault</th>{{#detection}}<th>Anomaly score</th>{{/detection}}</tr></thead>
        <tbody>
        {{#volumes}}
        <tr class="volume" data-name="{{name}}" data-status="{{status}}">
        <td class="name"><a href="{{href}}">{{name}}</a></td>
        <td class="size" data-bytes="{{sizeBytes}}">{{size}}</td>
        <td class="status"><span class="badge status-{{status}}">{{status}}</span></td>
        <td class="fault">{{fault}}{{#note}}<div class="note">{{note}}</div>{{/note}}</td>
        {{#detection}}<td class="anomaly-score">{{anomalyScore}}</td>{{/detection}}
        </tr>
        {{/volumes}}
        </tbody>
        </table>
        {{/empty(volumes)}}
        </section>

        <section id="lcmaps">
        <h2>lcmaps</h2>
        {{^maps}}<p class="empty">No lcmaps.</p>{{/maps}}
        {{^empty(maps)}}
        <table>
        <thead><tr><th>Name</th><th>Source → target</th><th>State</th><th>Copy</th><th>Rollback</th><th>Autorestore</th><th>lcgrp</th></tr></thead>
        <tbody>
        {{#maps}}
        <tr class="lcmap" data-name="{{name}}" data-state="{{state}}" data-restoring="{{#restoring}}yes{{/restoring}}{{^restoring}}no{{/restoring}}">
        <td class="name"><a href="{{href}}">{{name}}</a><div class="note">reverse {{reverse}}</div></td>
        <td class="volumes"><a href="{{source.href}}">{{source.name}}</a> → <a href="{{target.href}}">{{target.name}}</a></td>
        <td class="state">{{state}}</td>
        <td class="copy" data-percent="{{copy.percent}}"><progress max="100" value="{{copy.percent}}"></progress> <span class="percent">{{copy.percent}} %</span><div class="note">{{copy.detail}}</div></td>
        <td class="rollback">{{#rollback}}<div class="rollback-progress" data-percent="{{percent}}"><progress class="restoring" max="100" value="{{percent}}"></progress> <span class="percent">{{percent}} %</span><div class="note">{{detail}} ({{rollbackTrigger}})</div></div>{{/rollback}}{{^rollback}}<span class="none">none</span>{{/rollback}}</td>
        <td class="autorestore">{{autorestore}}</td>
        <td class="lcgrp">{{#group}}<a href="{{href}}">{{name}}</a>{{/group}}</td>
        </tr>
        {{/maps}}
        </tbody>
        </table>
        {{/empty(maps)}}
        </section>

        <section id="lcgroups">
        <h2>Consistency groups</h2>
        {{^groups}}<p class="empty">No lcgrps.</p>{{/groups}}
        {{^empty(groups)}}
        <table>
        <thead><tr><th>Name</th><th>Status</th><th>lcmaps</th><th>Rollback</th><th>Autorestore</th></tr></thead>
        <tbody>
        {{#groups}}
        <tr class="lcgrp" data-name="{{name}}" data-status="{{status}}" data-restoring="{{#restoring}}yes{{/restoring}}{{^restoring}}no{{/restoring}}">
        <td class="name"><a href="{{href}}">{{name}}</a></td>
        <td class="status">{{status}}</td>
        <td class="members">{{#maps}}<a href="{{href}}">{{name}}</a> {{/maps}}</td>
        <td class="rollback">{{#rollback}}<div class="rollback-progress" data-percent="{{percent}}"><progress class="restoring" max="100" value="{{percent}}"></progress> <span class="percent">{{percent}} %</span><div class="note">{{detail}}</div></div>{{/rollback}}{{^rollback}}<span class="none">none</span>{{/rollback}}</td>
        <td class="autorestore">{{autorestore}}</td>
        </tr>
        {{/groups}}
        </tbody>
        </table>
        {{/empty(groups)}}
        </section>

        <section id="timeline">
        <h2>Faults and rollbacks</h2>
        <p class="note">The last {{timelineMax}}, newest first, from the event log. A sequence number opens the story of the object (<code>snapback log explain</code>) at that event.</p>
        {{^timeline}}<p class="empty">No faults or rollbacks in the log.</p>{{/timeline}}
        {{^empty(timeline)}}<ol class="timeline">
        {{#timeline}}
        <li class="event kind-{{kindClass}}" data-seq="{{sequence}}">
        <a class="seq" href="{{href}}">seq {{sequence}}</a>
        <time>{{time}}</time>
        <span class="kind">{{kind}}</span>
        <span class="sentence">{{sentence}}</span>
        <span class="objects">{{#objects}}<a class="story-link" href="{{href}}">{{kind}} {{name}}</a> {{/objects}}</span>
        </li>
        {{/timeline}}
        </ol>{{/empty(timeline)}}
        </section>
        </main>
        </body>
        </html>

        """

    static let story = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        {{> head}}
        <title>{{kind}} {{name}}: story</title>
        </head>
        <body>
        <header>
        <p class="back"><a href="/">← status</a></p>
        <h1>The story of {{kind}} {{name}}</h1>
        <p class="note">What <code>snapback log explain {{name}}</code> prints: one line per event, with its sequence number as evidence.</p>
        </header>
        <main>
        <ol class="story">
        {{#lines}}
        <li id="seq-{{sequence}}" data-seq="{{sequence}}" data-text="{{text}}"><a class="seq" href="#seq-{{sequence}}">seq {{sequence}}</a>  <time>{{time}}</time>  <span class="sentence">{{sentence}}</span></li>
        {{/lines}}
        </ol>
        </main>
        </body>
        </html>

        """

    static let problem = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        {{> head}}
        <title>{{status}} {{title}}</title>
        </head>
        <body>
        <header>
        <p class="back"><a href="/">← status</a></p>
        <h1>{{title}}</h1>
        </header>
        <main>
        <p class="problem">{{message}}</p>
        </main>
        </body>
        </html>

        """

    static let style = """
        body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2330; background: #f4f6f9; }
        header, main { max-width: 1180px; margin: 0 auto; padding: 0 16px; }
        header { padding-top: 12px; }
        h1 { font-size: 22px; margin: 8px 0 4px; }
        h2 { font-size: 16px; margin: 20px 0 8px; }
        a { color: #1f5fbf; text-decoration: none; }
        a:hover { text-decoration: underline; }
        .system { margin: 0; color: #475063; }
        .note { color: #6a7385; font-size: 12px; margin: 2px 0; }
        .empty { color: #6a7385; font-style: italic; }
        table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid #dde2ea; }
        th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e8ebf0; vertical-align: top; }
        th { background: #eef1f6; font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; color: #475063; }
        progress { width: 140px; height: 12px; vertical-align: middle; }
        .percent { font-variant-numeric: tabular-nums; }
        .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
        .status-online { background: #dcf3e2; color: #17692f; }
        .status-faulted { background: #fde0de; color: #a3221a; }
        .status-restoring { background: #fff1cc; color: #8a5a00; }
        .status-out_of_space { background: #ece0fb; color: #5b2a9c; }
        .health-online { color: #17692f; font-weight: 600; }
        .health-degraded { color: #a3221a; font-weight: 600; }
        .none { color: #9aa2b1; }
        .timeline { list-style: none; padding: 0; margin: 0; background: #fff; border: 1px solid #dde2ea; }
        .timeline li { padding: 6px 10px; border-bottom: 1px solid #e8ebf0; border-left: 4px solid #9aa2b1; }
        .timeline li.kind-fault { border-left-color: #d0362b; }
        .timeline li.kind-rollback-started, .timeline li.kind-rollback-restarted, .timeline li.kind-rollback-scheduled { border-left-color: #d99a00; }
        .timeline li.kind-rollback-finished { border-left-color: #23914a; }
        .timeline li.kind-rollback-stopped { border-left-color: #7b2d8f; }
        .seq { font-family: ui-monospace, monospace; font-weight: 600; margin-right: 8px; }
        time { font-family: ui-monospace, monospace; color: #6a7385; font-size: 12px; margin-right: 8px; }
        .kind { font-weight: 600; margin-right: 8px; }
        .objects a { font-size: 12px; margin-left: 6px; }
        .story-link::before { content: "→ "; color: #9aa2b1; }
        .story { background: #fff; border: 1px solid #dde2ea; padding: 8px 8px 8px 36px; }
        .story li { padding: 3px 0; }
        .story li:target { background: #fff6d6; }
        .problem { background: #fff; border: 1px solid #dde2ea; padding: 12px; }
        """
}
