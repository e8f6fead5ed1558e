"""Charts as inline SVG (ground floor, standard library only): one set of axes that maps data onto a plot area and
draws its frame, ticks and labels, for the optimize report's charts and the results history's."""

from __future__ import annotations

import html
from dataclasses import dataclass

LABEL_CHAR_PX = 6.5  # a generous width of one character at font-size 11 in a sans-serif font


@dataclass
class Axes:
    """A plot area of ``width`` x ``height`` px with margins, mapping data ranges [x0, x1] x [y0, y1] onto it."""

    width: int
    height: int
    x0: float
    x1: float
    y0: float
    y1: float
    margins: tuple[int, int, int, int] = (60, 20, 20, 45)  # left, right, top, bottom

    def sx(self, v: float) -> float:
        ml, mr, _, _ = self.margins
        return ml + (v - self.x0) / ((self.x1 - self.x0) or 1.0) * (self.width - ml - mr)

    def sy(self, v: float) -> float:
        _, _, mt, mb = self.margins
        return self.height - mb - (v - self.y0) / ((self.y1 - self.y0) or 1.0) * (self.height - mt - mb)

    def frame(self, x_label: str, y_label: str, grid: bool = False, ticks: int = 5, extra_width: int = 0) -> list[str]:
        """The SVG's opening, both axes with ``ticks`` + 1 labelled ticks, and the axis titles."""
        ml, mr, mt, mb = self.margins
        w, h = self.width, self.height
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + extra_width}" height="{h}" '
                 'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>',
                 f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" stroke="#333"/>',
                 f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h - mb}" stroke="#333"/>']
        for i in range(ticks + 1):
            xv, yv = self.x0 + (self.x1 - self.x0) * i / ticks, self.y0 + (self.y1 - self.y0) * i / ticks
            parts.append(f'<text x="{self.sx(xv):.1f}" y="{h - mb + 15}" text-anchor="middle">{xv:.1f}</text>')
            parts.append(f'<text x="{ml - 6}" y="{self.sy(yv) + 4:.1f}" text-anchor="end">{yv:.1f}</text>')
            if grid:
                parts.append(f'<line x1="{ml}" y1="{self.sy(yv):.1f}" x2="{w - mr}" y2="{self.sy(yv):.1f}" '
                             'stroke="#eee"/>')
        parts.append(f'<text x="{(w + ml) / 2}" y="{h - 8}" text-anchor="middle">{html.escape(x_label)}</text>')
        parts.append(f'<text x="14" y="{(h - mb) / 2}" text-anchor="middle" transform="rotate(-90 14 {(h - mb) / 2})">'
                     f'{html.escape(y_label)}</text>')
        return parts

    def label(self, x: float, y: float, text: str) -> str:
        """A point's label to its right, or to its left where it would run past the plot's right edge."""
        if x + 6 + len(text) * LABEL_CHAR_PX > self.width - 2:
            return f'<text x="{x - 6:.1f}" y="{y - 6:.1f}" text-anchor="end">{html.escape(text)}</text>'
        return f'<text x="{x + 6:.1f}" y="{y - 6:.1f}">{html.escape(text)}</text>'
