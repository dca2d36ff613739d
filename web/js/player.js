// MagicPose frame player: play / pause, a frame slider and a frame rate for the image previews of MagicPose
// nodes with more than one image (MagicPose Extract Pose's pose-map batch, and any other MagicPose node that
// previews a batch). Video previews (`animated`) are left to ComfyUI's own player.
//
// Official extension hooks only (docs.comfy.org, custom nodes -> JavaScript: "hooks", "settings"; the DOM widget
// and preview fields as in ComfyUI_frontend 1.47 and 1.58, read there, nothing copied): `beforeRegisterNodeDef` chains
// `onExecuted` of OUR node types only (node ids starting with "MagicPose"), the controls are a DOM widget
// (`node.addDOMWidget`), settings are declared in `registerExtension({ settings })` and read through
// `app.extensionManager.setting`. No global LiteGraph/ComfyUI prototype is patched. CSS is injected from here
// (ComfyUI auto-loads only .js from WEB_DIRECTORY).
//
// Classic canvas nodes: the player selects the frame in the node's own image preview (`node.imageIndex`, the
// same field the preview's thumbnails and arrow keys use), so the frame is drawn by ComfyUI at full node size.
// Nodes 2.0 (Vue nodes) draw previews with their own gallery, so there the player shows the frame itself.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const WIDGET_NAME = "magicpose_player";
const SETTINGS = {
  enabled: "MagicPose.Player.Enabled",
  autoplay: "MagicPose.Player.Autoplay",
  fps: "MagicPose.Player.Fps",
};
const FPS_MIN = 1;
const FPS_MAX = 60;
const BAR_HEIGHT = 28;       // px: the control bar
const MARGIN = 4;            // px: DOM widget margin (ComfyUI's default, 10, leaves too little of a short widget)
const VIEW_HEIGHT = 220;     // px: the frame view (Nodes 2.0 only)

const CSS = `
.magicpose-player { display: flex; flex-direction: column; gap: 4px; box-sizing: border-box; width: 100%;
  height: 100%; padding: 2px 0; font: 12px/1 sans-serif; color: var(--input-text, #ddd); }
.magicpose-player-bar { display: flex; align-items: center; gap: 6px; height: ${BAR_HEIGHT - 4}px; }
.magicpose-player-bar button { flex: none; width: 28px; height: 22px; padding: 0; border-radius: 4px;
  border: 1px solid var(--border-color, #4e4e4e); background: var(--comfy-input-bg, #222); color: inherit;
  cursor: pointer; font-size: 11px; }
.magicpose-player-bar button:hover { background: var(--comfy-menu-bg, #353535); }
.magicpose-player-slider { flex: 1 1 auto; min-width: 40px; margin: 0; accent-color: #5aa0e6; cursor: pointer; }
.magicpose-player-label { flex: none; min-width: 4.2em; text-align: right; font-variant-numeric: tabular-nums; }
.magicpose-player-fps { flex: none; width: 3.4em; height: 20px; box-sizing: border-box; padding: 0 2px;
  border-radius: 4px; border: 1px solid var(--border-color, #4e4e4e); background: var(--comfy-input-bg, #222);
  color: inherit; font: inherit; }
.magicpose-player-unit { flex: none; opacity: 0.7; }
.magicpose-player-frame { display: none; flex: none; height: ${VIEW_HEIGHT}px; width: 100%; object-fit: contain; }
.magicpose-player.with-view .magicpose-player-frame { display: block; }
`;

/** @type {WeakMap<object, FramePlayer>} */
const players = new WeakMap();

function injectCss() {
  if (document.getElementById("magicpose-player-css")) return;
  const style = document.createElement("style");
  style.id = "magicpose-player-css";
  style.textContent = CSS;
  document.head.append(style);
}

function getSetting(id, fallback) {
  try {
    const value = app.extensionManager?.setting?.get(id);
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function clampFps(value) {
  const fps = Number(value);
  if (!Number.isFinite(fps)) return 8;
  return Math.min(FPS_MAX, Math.max(FPS_MIN, Math.round(fps)));
}

function isMagicPoseNode(nodeData) {
  return typeof nodeData?.name === "string" && nodeData.name.startsWith("MagicPose");
}

function frameUrls(images) {
  const rand = app.getRandParam?.() ?? "";   // the same cache-busting as ComfyUI's own previews
  return images.map((image) => {
    const params = new URLSearchParams({
      filename: image.filename,
      subfolder: image.subfolder ?? "",
      type: image.type ?? "output",
    });
    return api.apiURL(`/view?${params}${rand}`);
  });
}

function el(tag, className, props = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return Object.assign(node, props);
}

class FramePlayer {
  constructor(node) {
    this.node = node;
    this.frames = [];
    this.index = 0;
    this.timer = null;
    this.fps = clampFps(getSetting(SETTINGS.fps, 8));

    this.root = el("div", "magicpose-player");
    this.view = el("img", "magicpose-player-frame", { alt: "frame", draggable: false });
    const bar = el("div", "magicpose-player-bar");
    this.button = el("button", "magicpose-player-play", { type: "button", title: "Play / pause" });
    this.slider = el("input", "magicpose-player-slider", { type: "range", min: 0, max: 0, step: 1, value: 0,
                                                           title: "Frame" });
    this.label = el("span", "magicpose-player-label");
    this.fpsInput = el("input", "magicpose-player-fps", { type: "number", min: FPS_MIN, max: FPS_MAX, step: 1,
                                                          value: this.fps, title: "Frames per second" });
    const unit = el("span", "magicpose-player-unit", { textContent: "fps" });
    bar.append(this.button, this.slider, this.label, this.fpsInput, unit);
    this.root.append(this.view, bar);

    this.button.addEventListener("click", () => this.toggle());
    this.slider.addEventListener("input", () => {
      const index = Number(this.slider.value);
      this.pause();
      this.show(index);
    });
    this.fpsInput.addEventListener("change", () => this.setFps(this.fpsInput.value));
    // keep the canvas from treating key presses in the fps field as shortcuts
    this.fpsInput.addEventListener("keydown", (e) => e.stopPropagation());

    this.widget = node.addDOMWidget(WIDGET_NAME, "magicpose-player", this.root, {
      serialize: false,          // not an input of the prompt
      margin: MARGIN,
      getMinHeight: () => this.height,
      getMaxHeight: () => this.height,
      getValue: () => ({ index: this.index, playing: this.playing, fps: this.fps }),
      setValue: () => {},
    });
    this.widget.serialize = false; // not stored in the workflow's widgets_values
    // make room for the controls (the node keeps its width; a node the user made taller stays so)
    const needed = node.computeSize();
    node.setSize([node.size[0], Math.max(node.size[1], needed[1])]);
    const onRemove = this.widget.onRemove;
    this.widget.onRemove = (...args) => {
      this.pause();
      players.delete(node);
      return onRemove?.apply(this.widget, args);
    };
    this.render();
  }

  get playing() {
    return this.timer !== null;
  }

  /** Nodes 2.0 (Vue nodes) draw previews in their own gallery, which the player cannot drive: show the frame. */
  get withView() {
    return Boolean(globalThis.LiteGraph?.vueNodesMode);
  }

  get height() {
    return (this.withView ? VIEW_HEIGHT + BAR_HEIGHT : BAR_HEIGHT) + 2 * MARGIN;
  }

  setFrames(urls) {
    this.frames = urls;
    this.slider.max = String(Math.max(0, urls.length - 1));
    if (this.withView) {
      for (const url of urls) {   // warm the cache so playback does not wait on /view
        const img = new Image();
        img.src = url;
      }
    }
    this.show(0);
    if (getSetting(SETTINGS.autoplay, true)) this.play();
    else this.pause();
  }

  show(index) {
    const n = this.frames.length;
    if (!n) return;
    this.index = ((Math.round(index) % n) + n) % n;
    // ComfyUI's preview loads node.imgs after `executed`; select the frame once they are this batch's images
    if (this.node.imgs?.length === n) this.node.imageIndex = this.index;
    if (this.withView) this.view.src = this.frames[this.index];
    this.render();
    this.node.setDirtyCanvas?.(true, false);
  }

  step() {
    // the preview's own thumbnails / arrow keys may have moved the frame: continue from there
    const current = this.node.imageIndex;
    const from = Number.isInteger(current) && current !== this.index && this.node.imgs?.length === this.frames.length
      ? current : this.index;
    this.show(from + 1);
  }

  play() {
    if (this.frames.length < 2) return;
    this.pause();
    this.timer = setInterval(() => {
      if (!this.root.isConnected && !this.node.graph) {  // node deleted without onRemove
        this.pause();
        return;
      }
      this.step();
    }, 1000 / this.fps);
    this.render();
  }

  pause() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.render();
  }

  toggle() {
    if (this.playing) this.pause();
    else this.play();
  }

  setFps(value) {
    this.fps = clampFps(value);
    this.fpsInput.value = String(this.fps);
    if (this.playing) this.play();
  }

  render() {
    this.root.classList.toggle("with-view", this.withView);
    this.button.textContent = this.playing ? "❚❚" : "▶";
    this.button.setAttribute("aria-pressed", String(this.playing));
    this.slider.value = String(this.index);
    this.label.textContent = this.frames.length ? `${this.index + 1} / ${this.frames.length}` : "–";
  }

  dispose() {
    this.pause();
    if (this.node.widgets?.includes(this.widget)) this.node.removeWidget(this.widget);
    players.delete(this.node);
  }
}

function updatePlayer(node, message) {
  const images = Array.isArray(message?.images) ? message.images.filter((im) => im?.filename) : [];
  const animated = Array.isArray(message?.animated) ? message.animated.some(Boolean) : Boolean(message?.animated);
  const existing = players.get(node);
  if (!getSetting(SETTINGS.enabled, true) || animated || images.length < 2) {
    existing?.dispose();
    return;
  }
  injectCss();
  const player = existing ?? new FramePlayer(node);
  players.set(node, player);
  player.setFrames(frameUrls(images));
}

app.registerExtension({
  name: "magicpose.player",
  settings: [
    {
      id: SETTINGS.enabled,
      category: ["MagicPose", "Player", "Enabled"],
      name: "Frame player on image batches of MagicPose nodes",
      tooltip: "Adds play/pause, a frame slider and a frame rate under previews with several frames.",
      type: "boolean",
      defaultValue: true,
      sortOrder: 3,
    },
    {
      id: SETTINGS.autoplay,
      category: ["MagicPose", "Player", "Autoplay"],
      name: "Start playing when a run finishes",
      type: "boolean",
      defaultValue: true,
      sortOrder: 2,
    },
    {
      id: SETTINGS.fps,
      category: ["MagicPose", "Player", "Fps"],
      name: "Frame rate of the player (frames per second)",
      type: "slider",
      attrs: { min: FPS_MIN, max: FPS_MAX, step: 1 },
      defaultValue: 8,
      sortOrder: 1,
    },
  ],
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isMagicPoseNode(nodeData)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      try {
        updatePlayer(this, message);
      } catch (error) {
        console.error("[MagicPose] frame player:", error);
      }
      return result;
    };
  },
});
